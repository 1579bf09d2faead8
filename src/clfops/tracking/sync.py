"""`clfops sync RUN_DIR`: upload a run dir to MLflow, after a lost server or a run with tracking off.

The run dir is the local copy of everything (config, metrics.csv, files, status). Sync sends what the
store lacks: into the run recorded in run.json when the store still has it (only the metric points past
what it holds, so nothing is duplicated), else into a new run with the params from config.yaml. Safe to
repeat: a second sync sends nothing new.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from clfops import config as C
from clfops.tracking import rundirs as runs
from clfops.tracking.redact import redact_uri
from clfops.tracking.rundirs import read_metrics
from clfops.tracking.store import TrackingError, same_store
from clfops.tracking.tracker import STATUSES, Tracker

RUN_FILES = (
    "config.yaml",
    "overrides.yaml",
    "metrics.csv",
    "summary.json",
    "model_summary.txt",
    "train.log",
    "learning_curves.png",
    "augment_preview.png",
)


@dataclass
class SyncResult:
    run_id: str
    created: bool
    points_sent: int
    status: str


def sync(run_dir: Path, uri: str | None, timeout_s: float = 10.0) -> SyncResult:
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise TrackingError(f"{run_dir}: not a clfops run dir (no config.yaml)")
    info = _read_json(run_dir / "run.json")
    target = uri or info.get("tracking_uri")
    tracker, created = _open_run(run_dir, info, target, timeout_s)
    sent = _send_metrics(tracker, run_dir, {} if created else tracker.last_steps())
    for name in RUN_FILES:
        tracker.log_artifact(run_dir / name)
    tracker.log_artifacts(run_dir / "eval", "eval")
    status = _read_json(run_dir / "status.json").get("status", "FINISHED")
    if status not in STATUSES:  # RUNNING in a dir whose process is gone: it did not finish
        status = "KILLED"
    tracker.end(status)
    if tracker.offline:
        raise TrackingError(f"sync to {redact_uri(tracker.uri)} failed part-way: run `clfops sync {run_dir}` again")
    runs.write_text(run_dir / "run.json", json.dumps({"run_id": tracker.run_id, "tracking_uri": tracker.uri}))
    return SyncResult(tracker.run_id, created, sent, status)


def _open_run(run_dir: Path, info: dict, uri: str | None, timeout_s: float) -> tuple[Tracker, bool]:
    run_id = info.get("run_id")
    if run_id and same_store(uri, info.get("tracking_uri")):
        try:
            return Tracker.reopen(uri, run_id, timeout_s), False
        except TrackingError as err:
            if "unreachable" in str(err):
                raise
    cfg = C.from_yaml(run_dir / "config.yaml")
    data_name = cfg.data.name
    experiment = cfg.tracking.experiment or data_name
    tags = {"mlflow.runName": run_dir.name, "clfops.run_dir": str(run_dir.resolve()), "clfops.synced": "true"}
    tracker = Tracker.start(uri, experiment, run_dir.name, tags, timeout_s)
    tracker.log_params(C.flatten(cfg))
    return tracker, True


def _send_metrics(tracker: Tracker, run_dir: Path, already: dict[str, int]) -> int:
    sent = 0
    for row in read_metrics(run_dir / "metrics.csv"):
        step = row["step"]
        values = {k: v for k, v in row.items() if k not in ("step", "epoch", "time") and step > already.get(k, -1)}
        tracker.log_metrics(values, step)
        sent += len(values)
    tracker.flush()
    return sent


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
