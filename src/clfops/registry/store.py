"""MLflow calls of model logging and the registry (log the safe pyfunc model, versions, aliases, tags)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clfops.tracking.store import TrackingError, client, first_line, resolve_uri

log = logging.getLogger("clfops")

# The pyfunc model of a run is logged under this name; `runs:/<run_id>/model` and `clfops register` use it.
MODEL_NAME = "model"
TORCH_MODEL_NAME = "pytorch_model"  # the optional mlflow.pytorch flavor (pickle-based)
ALIASES = ("staging", "production")


@contextlib.contextmanager
def _fluent_store(uri: str | None) -> Iterator[str]:
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


def _pip_requirements() -> list[str]:
    """Explicit pins: MLflow's requirement inference imports the model in a subprocess (seconds)."""
    from importlib.metadata import version

    from clfops import __version__

    pins = [f"{name}=={version(name).split('+')[0]}" for name in ("torch", "safetensors", "numpy", "pandas", "mlflow")]
    return [*pins, f"clfops=={__version__}"]  # clfops: install it from its repository for other env managers


def _pyfunc_model_file() -> Path:
    """The file MLflow logs as the model's code, found without importing it (importing would tie the registry
    to serving's import graph; the file is data here)."""
    from importlib.util import find_spec

    spec = find_spec("clfops.serving.pyfunc_model")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin)


def model_signature(classes: list[str], channels: int, size: tuple[int, int]) -> Any:
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    inputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, channels, size[0], size[1]))])
    cols = [ColSpec("string", "class"), ColSpec("double", "probability")]
    outputs = Schema(cols + [ColSpec("double", f"p_{name}") for name in classes])
    params = ParamSchema([ParamSpec("batch_size", "long", 512)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def log_model(uri: str | None, run_id: str, model_dir: Path, input_example: Any, torch_net: Any = None) -> str:
    """Log `model_dir` (model.safetensors + manifest.json) as a pyfunc model from code; returns its models:/ URI.

    `input_example`: uint8 (N, C, H, W) real images (2 are enough). `torch_net` also logs mlflow.pytorch.
    """
    with _fluent_store(uri) as store:
        return _log_model(store, run_id, model_dir, input_example, torch_net)


def _log_model(uri: str, run_id: str, model_dir: Path, input_example: Any, torch_net: Any) -> str:
    import mlflow
    from mlflow.models import Model

    from clfops.serving.saved_model import MANIFEST, WEIGHTS, read_manifest

    manifest = read_manifest(model_dir)
    size = (int(manifest.image_size[0]), int(manifest.image_size[1]))
    tags = {"clfops.classes": ",".join(manifest.classes)[:5000], "clfops.weights_sha256": manifest.sha256}
    try:
        # Created explicitly in the run's experiment: left to itself MLflow files it under the fluent
        # API's current experiment (Default), away from the run it belongs to.
        experiment_id = client(uri).get_run(run_id).info.experiment_id
        logged = mlflow.initialize_logged_model(MODEL_NAME, run_id, tags, experiment_id=experiment_id)
        info = Model.log(
            artifact_path=None,
            name=MODEL_NAME,
            flavor=mlflow.pyfunc,
            run_id=run_id,
            model_id=logged.model_id,
            python_model=str(_pyfunc_model_file()),
            artifacts={"weights": str(model_dir / WEIGHTS), "manifest": str(model_dir / MANIFEST)},
            signature=model_signature(manifest.classes, manifest.in_channels, size),
            input_example=input_example,
            pip_requirements=_pip_requirements(),
            # Declared so that load_model(..., model_config={"expected_classes": [...]}) may set it.
            model_config={"expected_classes": None},
        )
        if torch_net is not None:  # pickle-based: only for users who ask for mlflow.pytorch.load_model
            torch_logged = mlflow.initialize_logged_model(TORCH_MODEL_NAME, run_id, experiment_id=experiment_id)
            Model.log(
                artifact_path=None,
                name=TORCH_MODEL_NAME,
                flavor=mlflow.pytorch,
                run_id=run_id,
                model_id=torch_logged.model_id,
                pytorch_model=torch_net,
                serialization_format="pickle",  # MLflow 3's default, pt2, needs a traced example input
                pip_requirements=_pip_requirements(),
            )
    except Exception as err:
        raise TrackingError(f"cannot log the model of run {run_id}: {first_line(err)}") from None
    return f"models:/{info.model_id}"


def load_pyfunc(model_uri: str, uri: str | None = None, expected_classes: list[str] | None = None) -> Any:
    """mlflow.pyfunc.load_model; the class names are checked on load when `expected_classes` is given."""
    import mlflow

    config = {"expected_classes": list(expected_classes)} if expected_classes is not None else None
    with _fluent_store(uri):
        return mlflow.pyfunc.load_model(model_uri, model_config=config)


class Registry:
    """The model registry on one store: versions, tags, aliases (aliases only: MLflow stages are deprecated)."""

    def __init__(self, uri: str | None, timeout_s: float = 10.0) -> None:
        self.uri = resolve_uri(uri)
        self.client = client(self.uri, timeout_s)

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
        with _fluent_store(self.uri):  # MLflow resolves models:/<id> sources through the global URI
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
