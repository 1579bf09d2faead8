"""`clfops show REF`: where a model came from, in one document.

REF is any model reference `serving.resolve` takes (run dir, checkpoint, run id, runs:/…, models:/NAME@ALIAS,
models:/NAME/N). The model gives the What (architecture, parameters, classes, image size); its MLflow run
(tracking/provenance.py) gives the rest: test and evaluation metrics, the registered versions and aliases that
point at it, the data (MLflow dataset input: name, sha256, sizes, source), the code (git commit, dirty flag,
versions), the configuration (overrides; the full config is RUN_DIR/config.yaml and the run's config.yaml
artifact), who/where/when, and the lineage (parent of a fine-tune, its children, its evaluation runs).
A model with no MLflow run (tracking off) shows what its files hold.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from clfops.models import count_params
from clfops.serving.resolve import resolve_model
from clfops.tracking.provenance import RunRecord, run_record

SECTIONS = ("what", "data", "code", "configuration", "who", "lineage")
VERSIONS = ("clfops", "torch", "lightning", "mlflow", "python")


def show(ref: str, tracking_uri: str | None) -> dict[str, Any]:
    """The provenance document of the model `ref` names (an unknown reference: one-line UserError)."""
    found = resolve_model(ref, tracking_uri)
    m = found.manifest
    what: dict[str, Any] = {
        "architecture": m.model,
        "model_args": m.model_args,
        "parameters": count_params(found.net),
        "classes": list(m.classes),
        "image_size": list(m.image_size),
        "channels": m.in_channels,
    }
    doc: dict[str, Any] = {"reference": ref, "resolved": found.description, "run_id": found.run_id, "what": what}
    local = found.run_dir / "config.yaml" if found.run_dir else None
    config_files = [str(local)] if local is not None and local.is_file() else []
    if found.run_id is None:  # tracking was off: the files are all there is
        doc.update(
            data={"sha256": m.data_sha256},
            code={"versions": {"clfops": m.clfops_version}},
            configuration={"config_files": config_files},
            who={},
            lineage={},
        )
        return doc
    record = run_record(found.tracking_uri or tracking_uri, found.run_id)
    # test/* from training, eval/* from `clfops evaluate --log-mlflow`; per-class values (a/b/c) are left out
    metrics = sorted(record.metrics.items())
    what["metrics"] = {k: v for k, v in metrics if k.startswith(("test/", "eval/")) and k.count("/") == 1}
    what["registered"] = record.registered
    doc.update(
        tracking_uri=record.uri,
        experiment=record.experiment,
        data=_data(record, m.data_sha256),
        code=_code(record),
        configuration=_configuration(record, config_files),
        who=_who(record),
        lineage=_lineage(record),
    )
    return doc


def _data(r: RunRecord, sha256: str) -> dict[str, Any]:
    sizes = {k.removeprefix("data.images."): int(v) for k, v in r.params.items() if k.startswith("data.images.")}
    data: dict[str, Any] = {"sha256": r.params.get("data.sha256", sha256), "sizes": sizes}
    if r.datasets:
        d = r.datasets[0]
        data.update(
            name=d["name"], digest=d["digest"], source=d["source"], context=d["tags"].get("mlflow.data.context")
        )
    return data


def _code(r: RunRecord) -> dict[str, Any]:
    dirty = r.tags.get("git.dirty")
    return {
        "git_commit": r.tags.get("mlflow.source.git.commit"),
        "git_dirty": None if dirty is None else dirty == "True",
        "versions": {name: r.params.get(f"version.{name}") for name in VERSIONS},
    }


def _configuration(r: RunRecord, config_files: list[str]) -> dict[str, Any]:
    command = r.tags.get("clfops.command", "")
    overrides = command.split()[2:] if command.startswith("clfops train") else []
    stored = [*config_files, f"{r.artifact_uri.rstrip('/')}/config.yaml"]
    return {"command": command, "overrides": overrides, "config_files": stored}


def _when(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def _who(r: RunRecord) -> dict[str, Any]:
    duration = (r.end_ms - r.start_ms) / 1000 if r.end_ms and r.start_ms else None
    return {
        "user": r.tags.get("mlflow.user", r.user),
        "host": r.tags.get("host"),
        "start": _when(r.start_ms),
        "end": _when(r.end_ms),
        "duration_s": duration,
        "status": r.status,
        "run_dir": r.tags.get("clfops.run_dir"),
    }


def _lineage(r: RunRecord) -> dict[str, Any]:
    keys = ("run_id", "model_uri", "version", "ref")
    parent = {k: r.tags[f"clfops.parent.{k}"] for k in keys if f"clfops.parent.{k}" in r.tags}
    return {"parent": parent or None, "children": r.children, "evaluations": r.evaluations}


def render(doc: dict[str, Any]) -> str:
    """The document as text, one section per heading (the --json output holds the same keys)."""
    lines = [f"{doc['reference']}  ({doc['resolved']})"]
    for section in SECTIONS:
        lines.append("")
        lines.append({"who": "Who, where, when"}.get(section, section.capitalize()))
        for key, value in (doc.get(section) or {}).items():
            lines += _field(key, value)
    return "\n".join(lines)


def _field(key: str, value: Any) -> list[str]:
    if isinstance(value, dict):
        if not value:
            return [f"  {key}: -"]
        if all(not isinstance(v, (dict, list)) for v in value.values()):
            return [f"  {key}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())]
        return [f"  {key}:", *(f"    {k}: {_fmt(v)}" for k, v in value.items())]
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [f"  {key}:", *(f"    - {_fmt(item)}" for item in value)]
    if isinstance(value, list):
        return [f"  {key}: {', '.join(map(str, value)) or '-'}"]
    return [f"  {key}: {_fmt(value)}"]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return "  ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    if isinstance(value, int) and not isinstance(value, bool) and value >= 10_000:
        return f"{value:,}"
    return str(value)
