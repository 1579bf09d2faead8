"""What `clfops compare` and `clfops sweep` share: each child run nested under the study's MLflow parent run as it
starts (StudyMember), the experiment both live in, run-dir names, and a console quiet but for one line a run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:60] or "run"


def unique_run_name(root: Path, name: str) -> str:
    """`name`, or `name-<time>` when a run dir of that name exists already (an earlier study of the same name)."""
    return name if not (root / name).exists() else f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


class StudyMember(L.Callback):
    """Nests the run under the study's parent run as soon as it starts, and remembers its id and run dir.

    The run's MLflow id comes from RUN_DIR/run.json, which train() writes before fitting."""

    def __init__(self, parent_run_id: str | None, tags: dict[str, str]) -> None:
        self.parent_run_id, self.tags = parent_run_id, tags
        self.run_id: str | None = None
        self.run_dir: Path | None = None
        self.uri: str | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from clfops.tracking import PARENT_TAG, set_run_tags

        self.run_dir = Path(trainer.default_root_dir)
        info_path = self.run_dir / "run.json"
        if not info_path.is_file():
            return  # tracking.enabled=false: nothing to nest
        info = json.loads(info_path.read_text())
        self.run_id, self.uri = info["run_id"], info["tracking_uri"]
        tags = dict(self.tags) | ({PARENT_TAG: self.parent_run_id} if self.parent_run_id else {})
        set_run_tags(self.uri, self.run_id, tags)


@contextlib.contextmanager
def quiet_console(verbose: bool) -> Iterator[None]:
    """Only warnings from training on the console (train.log keeps everything): one line per run is ours."""
    handlers = [
        h
        for h in logging.getLogger("clfops").handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]
    levels = [h.level for h in handlers]
    if not verbose:
        for h in handlers:
            h.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for h, level in zip(handlers, levels, strict=True):
            h.setLevel(level)


def study_experiment(cfg: Any) -> str:
    """Parent and children must share an experiment for MLflow to nest them: the recipe's, pinned."""
    return str(cfg.tracking.experiment or cfg.data.name)
