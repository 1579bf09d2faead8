"""The MLflow model registry and logged models, as clfops reads them: versions, aliases, tags, a run's model.

Model logging (the pyfunc model of a run dir) is `clfops.registry.model_logging`; this module only talks to
the store, so that serving can find a run's model without importing the registry's code.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from clfops.tracking.store import TrackingError, client, first_line, resolve_uri

MODEL_NAME = "model"
TORCH_MODEL_NAME = "pytorch_model"  # the optional mlflow.pytorch flavor (pickle-based)


def alias_problem(alias: str, to_set: bool = True) -> str | None:
    """MLflow's own reason why `alias` cannot name a version (None when it can): letters, digits, `_` and `-`,
    at most 256 characters; `latest` and `v<N>` are reserved for setting. Any such name is an alias to clfops
    (`staging` and `production` are the CI example's names; `champion`/`challenger` work the same)."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_model_alias_name, _validate_model_alias_name_reserved

    try:
        _validate_model_alias_name(alias)
        if to_set:
            _validate_model_alias_name_reserved(alias)
    except MlflowException as err:
        return first_line(err)
    return None


@contextlib.contextmanager
def fluent_store(uri: str | None) -> Iterator[str]:
    """Point MLflow's fluent API (Model.log, pyfunc.load_model) at `uri`, then put back what was there.

    mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI (and the registry URI) to os.environ: left
    in place, every later subprocess of this process (a `clfops` CLI call, a server) would use this store.
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    uri = resolve_uri(uri)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no tqdm bars on stderr
    env = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    before = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield uri
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = before
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def load_pyfunc(model_uri: str, uri: str | None = None, expected_classes: list[str] | None = None) -> Any:
    """mlflow.pyfunc.load_model; the class names are checked on load when `expected_classes` is given."""
    import mlflow

    config = {"expected_classes": list(expected_classes)} if expected_classes is not None else None
    with fluent_store(uri):
        return mlflow.pyfunc.load_model(model_uri, model_config=config)


class Registry:
    """The model registry on one store: versions, tags, aliases (aliases only: MLflow stages are deprecated)."""

    def __init__(self, uri: str | None, timeout_s: float = 10.0) -> None:
        self.uri = resolve_uri(uri)
        self.client = client(self.uri, timeout_s, create=False)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            raise TrackingError(f"{what} failed on {self.uri}: {first_line(err)}") from None

    def run(self, run_id: str) -> Any:
        return self._call(f"run {run_id}", self.client.get_run, run_id)

    def run_model_id(self, run_id: str) -> str | None:
        """The id of the pyfunc model logged by `run_id`, or None; the newest when a resumed run logged again."""
        run = self.run(run_id)
        outputs = run.outputs.model_outputs if run.outputs else []
        models = [self._call("get_logged_model", self.client.get_logged_model, o.model_id) for o in outputs]
        ours = [m for m in models if m.name == MODEL_NAME]
        return max(ours, key=lambda m: m.creation_timestamp).model_id if ours else None

    def register(self, name: str, run_id: str, model_id: str, tags: dict[str, str]) -> Any:
        """A new version of `name` (created when missing) pointing at logged model `model_id`."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self._call(f"creating registered model {name}", self.client.create_registered_model, name)
        with fluent_store(self.uri):  # MLflow resolves models:/<id> sources through the global URI
            return self._call(
                f"registering run {run_id} as {name}",
                self.client.create_model_version,
                name,
                f"models:/{model_id}",
                run_id=run_id,
                tags=tags,
                model_id=model_id,
            )

    def version(self, name: str, version: str) -> Any:
        return self._call(f"model {name} version {version}", self.client.get_model_version, name, str(version))

    def versions(self, name: str) -> list[Any]:
        found = self._call(f"model {name}", self.client.search_model_versions, f"name = '{name}'")
        return sorted(found, key=lambda v: int(v.version))

    def versions_of_run(self, name: str, run_id: str) -> list[Any]:
        return [v for v in self.versions(name) if v.run_id == run_id]

    def alias_version(self, name: str, alias: str) -> Any | None:
        """The version holding `alias`, or None when no version holds it."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(name, alias)
        except MlflowException:
            return None

    def aliases(self, name: str) -> dict[str, str]:
        """{alias: version} of registered model `name` ({} when it does not exist)."""
        from mlflow.exceptions import MlflowException

        try:
            return {alias: str(v) for alias, v in self.client.get_registered_model(name).aliases.items()}
        except MlflowException:
            return {}

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._call(f"setting alias {alias}", self.client.set_registered_model_alias, name, alias, str(version))

    def set_version_tags(self, name: str, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self._call("tagging a model version", self.client.set_model_version_tag, name, str(version), key, value)
