"""The two ends of a rank-0 run: its MLflow run started (or reopened on resume), and its ending, the one place
that sets FINISHED, FAILED or KILLED in status.json and in MLflow and says so on stderr."""

from __future__ import annotations

import getpass
import json
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

from omegaconf import DictConfig

from clfops import config as C
from clfops.data.sources import default_root
from clfops.errors import RunFailed
from clfops.tracking import STATUSES, Tracker
from clfops.tracking import rundirs as runs
from clfops.tracking.datasets import DataRecord, log_dataset
from clfops.training.context import RunSetup
from clfops.training.distributed import WatchedDDPStrategy
from clfops.training.preflight import Prepared

log = logging.getLogger("clfops")


def start_tracking(setup: RunSetup, run_dir: Path, prepared: Prepared) -> Tracker | None:
    """The run's MLflow run: a new one with params, provenance tags (and the parent model of a fine-tune) and
    its data as a dataset input, or on resume the one in run.json, back to RUNNING and tagged with what
    changed. None when tracking is off."""
    cfg, resume, source = setup.cfg, setup.resume, prepared.source
    if not cfg.tracking.enabled:
        return None
    if resume is not None and (run_dir / "run.json").is_file():
        info = json.loads((run_dir / "run.json").read_text())
        tracker = Tracker.reopen(
            cfg.tracking.uri or info["tracking_uri"], info["run_id"], cfg.tracking.connect_timeout_s
        )
        tracker.run_dir = run_dir
        changed = ", ".join(setup.changed) or "-"
        tracker.set_tags({"clfops.resumed_from": str(resume.checkpoint), "clfops.resume_changed": changed})
        log.info(f"MLflow run {tracker.run_id} reopened at {tracker.uri}")
        return tracker
    tags = runs.provenance_tags(run_dir, setup.overrides)
    tags["mlflow.user"] = getpass.getuser()  # MlflowClient.create_run records "unknown" otherwise
    tags.update(prepared.init.tags() if prepared.init is not None else {})
    experiment = cfg.tracking.experiment or source.name
    tracker = Tracker.start(cfg.tracking.uri, experiment, run_dir.name, tags, cfg.tracking.connect_timeout_s)
    tracker.run_dir = run_dir
    runs.write_text(run_dir / "run.json", json.dumps({"run_id": tracker.run_id, "tracking_uri": tracker.uri}))
    params = C.flatten(cfg)
    params.update(runs.version_params())
    params.update({"data.sha256": source.sha256, "data.classes": len(source.classes)})
    tracker.log_params(params)
    log_dataset(tracker, data_record(cfg, prepared))
    log.info(f"MLflow run {tracker.run_id} in experiment {experiment!r} at {tracker.uri}")
    return tracker


def data_record(cfg: DictConfig, prepared: Prepared) -> DataRecord:
    """The run's data for MLflow's dataset input: name, sha256, where it was read from, images per split."""
    root = cfg.data.root
    where = str(root) if root and "://" in str(root) else str(Path(root or default_root(cfg.data.name)).resolve())
    sizes = {name: len(getattr(prepared.splits, name)) for name in ("train", "val", "test")}
    return DataRecord(prepared.source.name, prepared.source.sha256, where, sizes)


class RunEnding:
    """How a rank-0 run ends. `tracker` is set as soon as the MLflow run exists: a failure before that (or a
    dead rank noticed by the watch thread) ends only the run dir; one after it ends the MLflow run too."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.tracker: Tracker | None = None

    def finished(self) -> None:
        self._end("FINISHED", None)

    def failed(self, err: BaseException, strategy: str | WatchedDDPStrategy) -> BaseException | None:
        """End the run FAILED or KILLED for `err`. Returns the error to raise instead of `err`, if any: when
        another rank died, name it, not the collective's "connection closed" that rank 0 saw as a result."""
        failure = strategy.rank_failure(err) if isinstance(strategy, WatchedDDPStrategy) else None
        hint = f"; the run is FAILED; continue it with: clfops train resume={self.run_dir}"
        if failure is None and isinstance(err, OSError):  # disk full, read-only, permission: one line, no debris
            failure = runs.os_error_line(err)
        if failure is None:
            self._end(*_status_of(err))
            return None
        replacement = RunFailed(f"{failure}{hint}")
        self._end(*_status_of(replacement))
        return replacement

    def rank_stuck(self, message: str) -> NoReturn:
        """Rank 0 is blocked in a collective after another rank died: called from the watch thread, it fails
        the run and exits the process (the blocked main thread cannot be unwound)."""
        self._end(*_status_of(RunFailed(f"{message}; rank 0 was blocked waiting for it")))
        print(f"clfops: error: {message}; the run is FAILED: {self.run_dir}", file=sys.stderr, flush=True)
        os._exit(1)

    def _end(self, status: str, message: str | None) -> None:
        if self.run_dir.is_dir():
            runs.write_status(self.run_dir, status, message)
        if self.tracker is not None:
            self.tracker.log_artifact(self.run_dir / "train.log")
            self.tracker.end(status, message)
        if status != "FINISHED":
            print(f"run {status}: {self.run_dir}", file=sys.stderr)


def _status_of(err: BaseException) -> tuple[str, str]:
    """(terminal status, one-line message) for the exception that ended a run."""
    if isinstance(err, (KeyboardInterrupt, SystemExit)):
        return "KILLED", str(err) or "interrupted"
    if getattr(err, "run_status", None) in STATUSES:  # a deliberate stop, e.g. a sweep's pruned trial
        return err.run_status, str(err)  # type: ignore[attr-defined]
    text = str(err).strip()
    return "FAILED", f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"
