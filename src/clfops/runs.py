"""Run directories: where a run's local copy lives (it survives a lost tracking server).

RUN_DIR = run.root/<run.name or a timestamp>/ holds config.yaml, overrides.yaml, metrics.csv, train.log,
summary.json, status.json, run.json (MLflow run id + URI), checkpoints/ and model/.
"""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from clfops.checkpoint import CheckpointError, atomic_write_text

log = logging.getLogger("clfops")


def create(root: Path, name: str | None) -> Path:
    """A new run directory; a timestamp name gets a -2, -3… suffix if two runs start in one second."""
    root.mkdir(parents=True, exist_ok=True)
    base = name or datetime.now().strftime("%Y%m%d-%H%M%S")
    for k in range(1, 1000):
        path = root / (base if k == 1 else f"{base}-{k}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            if name:  # an explicit name is the user's choice: refuse to mix two runs in one dir
                raise CheckpointError(
                    f"run dir {path} exists: pick another run.name, or resume it with resume={path}"
                ) from None
    raise CheckpointError(f"cannot create a run dir under {root}")


def write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def write_status(run_dir: Path, status: str, message: str | None = None) -> None:
    data = {"status": status, "time": time.time(), "message": message}
    atomic_write_text(run_dir / "status.json", json.dumps(data))


def attach_log_file(path: Path) -> logging.Handler:
    """train.log gets clfops' and Lightning's messages, timestamped."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("clfops", "lightning.pytorch"):
        logging.getLogger(name).addHandler(handler)
    logging.getLogger("clfops").setLevel(logging.INFO)
    return handler


def detach_log_file(handler: logging.Handler) -> None:
    for name in ("clfops", "lightning.pytorch"):
        logging.getLogger(name).removeHandler(handler)
    handler.close()


def resume_checkpoint(resume: str | None) -> str | None:
    """resume=RUN_DIR or a checkpoint file -> the checkpoint path Lightning resumes from."""
    if not resume:
        return None
    path = Path(resume)
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise CheckpointError(f"resume={resume}: no checkpoint at {path}")
    return str(path)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def provenance_tags(run_dir: Path, overrides: list[str]) -> dict[str, str]:
    tags = {
        "mlflow.runName": run_dir.name,
        "mlflow.source.name": "clfops train",
        "clfops.command": " ".join(["clfops", "train", *overrides]),
        "clfops.run_dir": str(run_dir.resolve()),
        "host": platform.node(),
    }
    commit = _git("rev-parse", "HEAD")
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git.dirty"] = str(bool(_git("status", "--porcelain", "--untracked-files=no")))
    return tags


def version_params() -> dict[str, Any]:
    import lightning
    import mlflow
    import torch

    from clfops import __version__

    return {
        "version.clfops": __version__,
        "version.torch": torch.__version__,
        "version.lightning": lightning.__version__,
        "version.mlflow": mlflow.__version__,
        "version.python": sys.version.split()[0],
    }
