"""MLflow calls of `clfops evaluate`: find runs, download their artifacts and models, log evaluations."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from clfops.tracking.store import TrackingError, client, experiment_id, first_line, resolve_uri, with_user

log = logging.getLogger("clfops")


class RunRef:
    """What `clfops evaluate` needs to know about an existing run."""

    def __init__(self, run_id: str, experiment_name: str, tags: dict[str, str], uri: str) -> None:
        self.run_id, self.experiment_name, self.tags, self.uri = run_id, experiment_name, tags, uri


def find_run(uri: str | None, run_id: str, timeout_s: float = 10.0) -> RunRef:
    """The run `run_id` on `uri`, or a one-line TrackingError naming the id and the store."""
    uri = resolve_uri(uri)
    c = client(uri, timeout_s, create=False)
    try:
        run = c.get_run(run_id)
        experiment = c.get_experiment(run.info.experiment_id)
    except Exception as err:
        raise TrackingError(
            f"unknown MLflow run {run_id!r} on {uri} ({first_line(err)}): check the id in `clfops ui`, "
            "or point MLFLOW_TRACKING_URI / --tracking-uri at the store that holds it"
        ) from None
    return RunRef(run_id, experiment.name, dict(run.data.tags), uri)


def download_run_artifact(uri: str | None, run_id: str, path: str, dst: Path) -> Path | None:
    """Download artifact `path` (file or folder) of a run into `dst`; None when the run has no such artifact."""
    import posixpath

    import mlflow.artifacts

    uri = resolve_uri(uri)
    c = client(uri, create=False)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no tqdm bars on stderr
    try:
        present = {a.path for a in c.list_artifacts(run_id, posixpath.dirname(path) or None)}
        if path not in present:
            return None
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=path, dst_path=str(dst), tracking_uri=uri
        )
    except Exception as err:
        raise TrackingError(f"cannot download {path!r} of MLflow run {run_id}: {first_line(err)}") from None
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
    c = client(uri, create=False)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        location, run_id = _resolve_model_uri(c, model_uri)
        local = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(dst), tracking_uri=uri)
    except TrackingError:
        raise
    except Exception as err:
        raise TrackingError(f"cannot fetch model {model_uri} from {uri}: {first_line(err)}") from None
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
            run_id = c.create_run(experiment_id(c, experiment, uri), tags=with_user(tags)).info.run_id
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
        raise TrackingError(f"cannot log the evaluation to MLflow on {uri}: {first_line(err)}") from None
    return run_id
