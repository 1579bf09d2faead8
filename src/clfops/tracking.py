"""Every MLflow call clfops makes: store setup, run start/end, params, tags, metrics, artifacts, models.

MLflow is the source of truth for runs; the run directory is the local copy that survives a lost server.
Metric points go through `log_batch(synchronous=False)` (MLflow's async queue) and are flushed before the
run ends, so logging costs the training loop almost nothing. A server that stops answering mid-run turns
the tracker offline with one warning: training goes on and `clfops sync RUN_DIR` uploads it later.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clfops.errors import UserError

log = logging.getLogger("clfops")

DEFAULT_URI = "sqlite:///mlflow.db"
STATUSES = ("FINISHED", "FAILED", "KILLED")


class TrackingError(UserError):
    """Tracking cannot start (server unreachable, bad URI, unknown run): one line for the user."""


def resolve_uri(uri: str | None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def _check_reachable(uri: str, timeout_s: float) -> None:
    """Fail in seconds, not minutes: MLflow's own client retries an unreachable server for a long time."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
            return
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            return  # reachable; authentication is checked by the first real call
        raise TrackingError(f"tracking server {uri} answered HTTP {err.code} on /health") from None
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingError(
            f"tracking server {uri} is unreachable ({reason}): start it (clfops server) or set "
            "tracking.uri / MLFLOW_TRACKING_URI, or tracking.enabled=false"
        ) from None


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialise the first use of a SQLite store: concurrent first migrations corrupt it."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def client(uri: str | None = None, timeout_s: float = 10.0):  # -> MlflowClient
    """An MlflowClient on `uri` (checked reachable); the SQLite schema is created once, under a lock."""
    uri = resolve_uri(uri)
    _check_reachable(uri, timeout_s)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    from mlflow.tracking import MlflowClient

    with _store_lock(uri):
        c = MlflowClient(tracking_uri=uri)
        c.search_experiments(max_results=1)  # forces store creation + migration while we hold the lock
    return c


def _experiment_id(c: Any, name: str, uri: str) -> str:
    with _store_lock(uri):
        exp = c.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        from mlflow.exceptions import MlflowException

        try:
            return c.create_experiment(name)
        except MlflowException:  # created by a concurrent process in between
            return c.get_experiment_by_name(name).experiment_id


class Tracker:
    """One MLflow run. `offline` becomes True when the server stops answering; nothing raises then."""

    def __init__(self, mlflow_client: Any, run_id: str, uri: str) -> None:
        self.client, self.run_id, self.uri = mlflow_client, run_id, uri
        self.offline = False
        self.run_dir: Path | None = None  # named in the offline warning
        self.points_logged = 0
        self._pending: list[Any] = []  # RunOperations of async log_batch calls, waited on in flush()

    @classmethod
    def start(cls, uri: str | None, experiment: str, run_name: str, tags: dict[str, str], timeout_s: float) -> Tracker:
        uri = resolve_uri(uri)
        try:
            c = client(uri, timeout_s)
            exp_id = _experiment_id(c, experiment, uri)
            run = c.create_run(exp_id, run_name=run_name, tags=tags)
        except TrackingError:
            raise
        except Exception as err:
            raise TrackingError(f"cannot start an MLflow run on {uri}: {_first_line(err)}") from None
        return cls(c, run.info.run_id, uri)

    @classmethod
    def reopen(cls, uri: str | None, run_id: str, timeout_s: float) -> Tracker:
        """Continue an existing run (resume): its status goes back to RUNNING."""
        uri = resolve_uri(uri)
        c = client(uri, timeout_s)
        try:
            c.get_run(run_id)
            c.update_run(run_id, status="RUNNING")
        except Exception as err:
            raise TrackingError(f"cannot reopen MLflow run {run_id} on {uri}: {_first_line(err)}") from None
        return cls(c, run_id, uri)

    def _guard(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self.offline:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            self._go_offline(f"{what} failed: {_first_line(err)[:160]}")
            return None

    def _go_offline(self, reason: str) -> None:
        self.offline = True
        self._pending.clear()
        # MLflow's async queue keeps retrying what it holds and logs each failure: one warning from us is enough.
        logging.getLogger("mlflow.utils.async_logging").setLevel(logging.CRITICAL)
        logging.getLogger("mlflow.utils.async_logging.async_logging_queue").setLevel(logging.CRITICAL)
        log.warning(
            f"tracking server {self.uri} stopped answering ({reason}); training goes on and the run dir keeps "
            f"everything: run `clfops sync {self.run_dir or 'RUN_DIR'}` when the server is back"
        )

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_value(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
            self._guard("log_params", self.client.log_batch, self.run_id, params=items[i : i + 100])

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:5000]) for k, v in tags.items()]
        self._guard("set_tags", self.client.log_batch, self.run_id, tags=items)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if items:
            ops = self._guard("log_metrics", self.client.log_batch, self.run_id, metrics=items, synchronous=False)
            if ops is not None:
                self._pending.append(ops)
                self.points_logged += len(items)

    def flush(self) -> None:
        """Wait until queued points are stored. A server that does not answer /health within 5 s is not
        waited on (its queued calls would each retry for minutes): the tracker goes offline instead."""
        if self.offline or not self._pending:
            return
        if self.uri.startswith(("http://", "https://")):
            try:
                _check_reachable(self.uri, timeout_s=5.0)
            except TrackingError:
                self._go_offline("no answer to /health")
                return
        pending, self._pending = self._pending, []
        for ops in pending:
            self._guard("log_metrics", ops.wait)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if path.exists():
            self._guard("log_artifact", self.client.log_artifact, self.run_id, str(path), artifact_path)

    def log_artifacts(self, directory: Path, artifact_path: str | None = None) -> None:
        if directory.exists():
            self._guard("log_artifacts", self.client.log_artifacts, self.run_id, str(directory), artifact_path)

    def end(self, status: str, error: str | None = None) -> None:
        """Flush queued points, record why it failed, set the terminal status."""
        assert status in STATUSES, status
        self.flush()
        if error:
            self.set_tags({"error": error})
        self._guard("set_terminated", self.client.set_terminated, self.run_id, status)

    def last_steps(self) -> dict[str, int]:
        """The highest step already stored per metric: a resumed run does not send those points again."""
        run = self._guard("get_run", self.client.get_run, self.run_id)
        if run is None:
            return {}
        steps = {}
        for key in run.data.metrics:
            history = self._guard("get_metric_history", self.client.get_metric_history, self.run_id, key) or []
            steps[key] = max((m.step for m in history), default=-1)
        return steps

    def artifact_uri(self) -> str | None:
        run = self._guard("get_run", self.client.get_run, self.run_id)
        return run.info.artifact_uri if run else None


def run_dir_lookup(uri: str | None, timeout_s: float = 10.0) -> Any:
    """A function run_id -> the local run dir recorded in the run's `clfops.run_dir` tag (for resume=ID)."""

    def lookup(run_id: str) -> str:
        try:
            run = client(uri, timeout_s).get_run(run_id)
        except TrackingError:
            raise
        except Exception as err:
            raise TrackingError(f"unknown MLflow run {run_id} on {resolve_uri(uri)}: {_first_line(err)}") from None
        path = run.data.tags.get("clfops.run_dir")
        if not path:
            raise TrackingError(f"MLflow run {run_id} has no clfops.run_dir tag: resume from its run dir instead")
        return path

    return lookup


def _param_value(value: Any) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:300]


# ---- evaluation helpers (issue 6) ----


class RunRef:
    """What `clfops evaluate` needs to know about an existing run."""

    def __init__(self, run_id: str, experiment_name: str, tags: dict[str, str], uri: str) -> None:
        self.run_id, self.experiment_name, self.tags, self.uri = run_id, experiment_name, tags, uri


def find_run(uri: str | None, run_id: str, timeout_s: float = 10.0) -> RunRef:
    """The run `run_id` on `uri`, or a one-line TrackingError naming the id and the store."""
    uri = resolve_uri(uri)
    c = client(uri, timeout_s)
    try:
        run = c.get_run(run_id)
        experiment = c.get_experiment(run.info.experiment_id)
    except Exception as err:
        raise TrackingError(
            f"unknown MLflow run {run_id!r} on {uri} ({_first_line(err)}): check the id in `clfops ui`, "
            "or point MLFLOW_TRACKING_URI / --tracking-uri at the store that holds it"
        ) from None
    return RunRef(run_id, experiment.name, dict(run.data.tags), uri)


def download_run_artifact(uri: str | None, run_id: str, path: str, dst: Path) -> Path | None:
    """Download artifact `path` (file or folder) of a run into `dst`; None when the run has no such artifact."""
    import posixpath

    import mlflow.artifacts

    uri = resolve_uri(uri)
    c = client(uri)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no tqdm bars on stderr
    try:
        present = {a.path for a in c.list_artifacts(run_id, posixpath.dirname(path) or None)}
        if path not in present:
            return None
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=path, dst_path=str(dst), tracking_uri=uri
        )
    except Exception as err:
        raise TrackingError(f"cannot download {path!r} of MLflow run {run_id}: {_first_line(err)}") from None
    return Path(local)


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p for p in parts if p)])


def _run_artifact_location(c: Any, run_id: str, path: str) -> str:
    """`runs:/ID/PATH` -> where it is stored: a run artifact, else the run's latest logged model named PATH's
    first part (MLflow 3 keeps logged models outside the run's artifacts)."""
    run = c.get_run(run_id)
    name, _, rest = path.partition("/")
    if name in {a.path for a in c.list_artifacts(run_id)}:
        return _join(run.info.artifact_uri, path)
    found = c.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = '{name.replace(chr(39), '')}'",
    )
    if not found:
        raise TrackingError(f"MLflow run {run_id} has no artifact or logged model named {name!r}")
    return _join(max(found, key=lambda m: m.creation_timestamp).artifact_location, rest)


def _resolve_model_uri(c: Any, model_uri: str) -> tuple[str, str | None]:
    """(a URI the artifact download can read, the id of the run that logged the model) for `runs:/ID/…`,
    `models:/name@alias[/path]`, `models:/name/N[/path]` and `models:/m-…` (a logged model). Registry URIs are
    resolved here through `c`: MLflow's own download resolves them on the process-global registry URI."""
    if model_uri.startswith("runs:/"):
        run_id, _, path = model_uri.removeprefix("runs:/").partition("/")
        return _run_artifact_location(c, run_id, path or "model"), run_id
    if not model_uri.startswith("models:/"):
        raise TrackingError(
            f"model URI {model_uri!r}: use runs:/RUN_ID/PATH, models:/NAME@ALIAS or models:/NAME/VERSION"
        )
    parts = model_uri.removeprefix("models:/").split("/")
    if "@" in parts[0]:
        name, alias = parts[0].split("@", 1)
        version, rest = c.get_model_version_by_alias(name, alias), parts[1:]
    elif len(parts) >= 2 and parts[1].isdigit():
        version, rest = c.get_model_version(parts[0], parts[1]), parts[2:]
    elif parts[0].startswith("m-"):
        logged = c.get_logged_model(parts[0])
        return _join(logged.artifact_location, *parts[1:]), logged.source_run_id
    else:
        raise TrackingError(f"model URI {model_uri!r}: name a version or an alias (models:/NAME@ALIAS)")
    location = c.get_model_version_download_uri(version.name, version.version)
    return _join(location, *rest), version.run_id


def download_model(uri: str | None, model_uri: str, dst: Path) -> tuple[Path, str | None]:
    """Download a model URI into `dst`; returns (local folder, id of the run that logged it, when known)."""
    import mlflow.artifacts

    uri = resolve_uri(uri)
    c = client(uri)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        location, run_id = _resolve_model_uri(c, model_uri)
        local = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(dst), tracking_uri=uri)
    except TrackingError:
        raise
    except Exception as err:
        raise TrackingError(f"cannot fetch model {model_uri} from {uri}: {_first_line(err)}") from None
    return Path(local), run_id


def log_evaluation(
    uri: str | None,
    run_id: str | None,
    experiment: str,
    tags: dict[str, str],
    metrics: dict[str, float],
    files: list[Path],
    artifact_path: str = "eval",
) -> str:
    """Log metrics (step 0) and `files` (under `artifact_path`) to run `run_id`, or, with run_id None, to a new
    FINISHED run in `experiment` carrying `tags`. Synchronous: the numbers are stored when this returns."""
    from mlflow.entities import Metric, RunTag

    uri = resolve_uri(uri)
    c = client(uri)
    now = int(time.time() * 1000)
    try:
        if run_id is None:
            run_id = c.create_run(_experiment_id(c, experiment, uri), tags=tags).info.run_id
            new = True
        else:
            c.log_batch(run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])
            new = False
        items = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):  # MLflow takes at most 1000 metrics per batch
            c.log_batch(run_id, metrics=items[i : i + 1000])
        for path in files:  # the files this evaluation wrote, not whatever else sits in its folder
            c.log_artifact(run_id, str(path), artifact_path)
        if new:
            c.set_terminated(run_id, "FINISHED")
    except Exception as err:
        raise TrackingError(f"cannot log the evaluation to MLflow on {uri}: {_first_line(err)}") from None
    return run_id


# ---- models and registry (issues 4, 7) ----
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

    from clfops import pyfunc_model
    from clfops.export import MANIFEST, WEIGHTS, read_manifest

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
            python_model=str(Path(pyfunc_model.__file__)),
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
        raise TrackingError(f"cannot log the model of run {run_id}: {_first_line(err)}") from None
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
            raise TrackingError(f"{what} failed on {self.uri}: {_first_line(err)}") from None

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


# ---- studies (issue 9) ----
# A study (clfops compare / clfops sweep) is one parent run; each of its runs carries the parent's id in the tag
# MLflow's UI nests by (`mlflow.parentRunId`). Parent and children live in the same experiment.
PARENT_TAG = "mlflow.parentRunId"


class RunHistory:
    """One run as a comparison table needs it: name, status, tags, last values and per-metric (step, value)s."""

    def __init__(
        self,
        run_id: str,
        name: str,
        status: str,
        tags: dict[str, str],
        latest: dict[str, float],
        history: dict[str, list[tuple[int, float]]],
    ) -> None:
        self.run_id, self.name, self.status, self.tags = run_id, name, status, tags
        self.latest, self.history = latest, history


def set_run_tags(uri: str | None, run_id: str, tags: dict[str, str]) -> None:
    """Tag an existing run (any status) synchronously."""
    from mlflow.entities import RunTag

    uri = resolve_uri(uri)
    try:
        client(uri).log_batch(run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])
    except Exception as err:
        raise TrackingError(f"cannot tag MLflow run {run_id} on {uri}: {_first_line(err)}") from None


def end_pruned(uri: str | None, run_id: str, reason: str) -> None:
    """A run stopped early by the sweep's pruner: KILLED with `clfops.pruned=true`, not FAILED with an error."""
    uri = resolve_uri(uri)
    c = client(uri)
    try:
        if "error" in c.get_run(run_id).data.tags:
            c.delete_tag(run_id, "error")  # train() recorded the pruning exception as an error
        set_run_tags(uri, run_id, {"clfops.pruned": "true", "clfops.pruned_reason": reason})
        c.set_terminated(run_id, "KILLED")
    except TrackingError:
        raise
    except Exception as err:
        raise TrackingError(f"cannot mark MLflow run {run_id} pruned on {uri}: {_first_line(err)}") from None


def child_run_ids(uri: str | None, parent_run_id: str) -> list[str]:
    """Ids of the runs nested under `parent_run_id`, oldest first."""
    uri = resolve_uri(uri)
    c = client(uri)
    try:
        experiment_id = c.get_run(parent_run_id).info.experiment_id
        found = c.search_runs(
            [experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'", order_by=["start_time ASC"]
        )
    except Exception as err:
        raise TrackingError(f"cannot list the runs of study run {parent_run_id} on {uri}: {_first_line(err)}") from None
    return [run.info.run_id for run in found]


def run_histories(uri: str | None, run_ids: list[str], keys: list[str]) -> list[RunHistory]:
    """Metric histories (sorted by step) of `keys` for each run; an unknown id is a one-line TrackingError."""
    uri = resolve_uri(uri)
    c = client(uri)
    out = []
    for run_id in run_ids:
        try:
            run = c.get_run(run_id)
        except Exception as err:
            raise TrackingError(
                f"unknown MLflow run {run_id!r} on {uri} ({_first_line(err)}): check the id in `clfops ui`, "
                "or point MLFLOW_TRACKING_URI / --tracking-uri at the store that holds it"
            ) from None
        history = {}
        for key in keys:
            if key in run.data.metrics:
                points = c.get_metric_history(run_id, key)
                history[key] = sorted((int(m.step), float(m.value)) for m in points)
        tags = dict(run.data.tags)
        name = run.info.run_name or run_id
        out.append(RunHistory(run_id, name, run.info.status, tags, dict(run.data.metrics), history))
    return out
