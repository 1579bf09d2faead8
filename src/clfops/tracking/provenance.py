"""Everything MLflow knows about where one run's model came from, read for `clfops show`.

One run (`run_record`): its metrics, params, tags, dataset inputs, times and status; the registered versions and
aliases pointing at it; the runs that fine-tuned from it (tag clfops.parent.run_id, set by training/finetune.py)
and the evaluation runs logged against it (tag clfops.source_run_id, set by evaluation/evaluate.py). The
searches run over every experiment of the store, so a child in another experiment is found too:

    mlflow.search_runs(search_all_experiments=True, filter_string="tags.`clfops.parent.run_id` = 'RUN_ID'")
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from clfops.tracking.store import TrackingError, client, first_line, resolve_uri

PARENT_RUN_TAG = "clfops.parent.run_id"  # training/finetune.py writes it (the same name, kept in sync by a test)
SOURCE_RUN_TAG = "clfops.source_run_id"  # evaluation/evaluate.py writes it on evaluation runs


@dataclass
class RunRecord:
    run_id: str
    uri: str
    experiment: str
    status: str
    user: str
    start_ms: int | None
    end_ms: int | None
    artifact_uri: str
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]
    datasets: list[dict[str, Any]] = field(default_factory=list)
    registered: list[dict[str, Any]] = field(default_factory=list)  # name, version, aliases
    children: list[dict[str, str]] = field(default_factory=list)  # runs with model.init = this run's model
    evaluations: list[dict[str, Any]] = field(default_factory=list)  # evaluation runs logged against it


def children_filter(run_id: str) -> str:
    """The search filter that finds the fine-tunes of a run's model (docs/finetune.md)."""
    return f"tags.`{PARENT_RUN_TAG}` = '{run_id}'"


def run_record(uri: str | None, run_id: str) -> RunRecord:
    """The run with its datasets, registry entries, children and evaluations; one-line TrackingError if absent."""
    uri = resolve_uri(uri)
    c = client(uri, create=False)
    try:
        run = c.get_run(run_id)
        experiment = c.get_experiment(run.info.experiment_id).name
        record = RunRecord(
            run_id, uri, experiment, run.info.status, run.info.user_id, run.info.start_time, run.info.end_time,
            run.info.artifact_uri, dict(run.data.metrics), dict(run.data.params), dict(run.data.tags),
        )  # fmt: skip
        record.datasets = [_dataset(d) for d in (run.inputs.dataset_inputs if run.inputs else [])]
        record.registered = _registered(c, run_id)
        ids = [e.experiment_id for e in c.search_experiments()]
        record.children = [_brief(r) for r in c.search_runs(ids, children_filter(run_id), max_results=1000)]
        evals = c.search_runs(ids, f"tags.`{SOURCE_RUN_TAG}` = '{run_id}'", max_results=1000)
        record.evaluations = [_brief(r) | {"metrics": dict(r.data.metrics)} for r in evals]
    except Exception as err:
        raise TrackingError(f"MLflow run {run_id} on {uri}: {first_line(err)}") from None
    return record


def _dataset(d: Any) -> dict[str, Any]:
    ds = d.dataset
    out: dict[str, Any] = {"name": ds.name, "digest": ds.digest, "source_type": ds.source_type}
    out["source"] = _json(ds.source).get("uri", ds.source)
    out["profile"] = _json(ds.profile)
    out["tags"] = {t.key: t.value for t in d.tags}
    return out


def _json(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _registered(c: Any, run_id: str) -> list[dict[str, Any]]:
    """Registered versions made from this run, with the aliases that point at each."""
    out = []
    for v in sorted(c.search_model_versions(f"run_id = '{run_id}'"), key=lambda v: (v.name, int(v.version))):
        aliases = sorted(a for a, n in c.get_registered_model(v.name).aliases.items() if str(n) == str(v.version))
        out.append({"name": v.name, "version": str(v.version), "aliases": aliases})
    return out


def _brief(r: Any) -> dict[str, str]:
    return {
        "run_id": r.info.run_id,
        "run_name": r.info.run_name or "",
        "status": r.info.status,
        "ref": r.data.tags.get("clfops.parent.ref", ""),
    }
