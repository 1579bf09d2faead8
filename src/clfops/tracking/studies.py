"""MLflow calls of studies (`clfops compare`, `clfops sweep`): parent/child runs and metric histories."""

from __future__ import annotations

import logging

from clfops.tracking.store import TrackingError, client, first_line, resolve_uri

log = logging.getLogger("clfops")

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
        raise TrackingError(f"cannot tag MLflow run {run_id} on {uri}: {first_line(err)}") from None


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
        raise TrackingError(f"cannot mark MLflow run {run_id} pruned on {uri}: {first_line(err)}") from None


def child_run_ids(uri: str | None, parent_run_id: str) -> list[str]:
    """Ids of the runs nested under `parent_run_id`, oldest first."""
    uri = resolve_uri(uri)
    c = client(uri, create=False)
    try:
        experiment_id = c.get_run(parent_run_id).info.experiment_id
        found = c.search_runs(
            [experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'", order_by=["start_time ASC"]
        )
    except Exception as err:
        raise TrackingError(f"cannot list the runs of study run {parent_run_id} on {uri}: {first_line(err)}") from None
    return [run.info.run_id for run in found]


def run_histories(uri: str | None, run_ids: list[str], keys: list[str]) -> list[RunHistory]:
    """Metric histories (sorted by step) of `keys` for each run; an unknown id is a one-line TrackingError."""
    uri = resolve_uri(uri)
    c = client(uri, create=False)
    out = []
    for run_id in run_ids:
        try:
            run = c.get_run(run_id)
        except Exception as err:
            raise TrackingError(
                f"unknown MLflow run {run_id!r} on {uri} ({first_line(err)}): check the id in `clfops ui`, "
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
