"""Run directories: where a run's local copy lives (it survives a lost tracking server).

RUN_DIR = run.root/<run.name or a timestamp>/ holds config.yaml, overrides.yaml, metrics.csv, train.log,
summary.json, status.json, run.json (MLflow run id + URI), checkpoints/ and model/.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import json
import logging
import platform
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from clfops.config import check_run_name
from clfops.safe_files import CheckpointError, atomic_write_text
from clfops.tracking.redact import install_log_filter, redact_text

log = logging.getLogger("clfops")


def create(root: Path, name: str | None) -> Path:
    """A new run directory; a timestamp name gets a -2, -3… suffix if two runs start in one second."""
    check_run_name(name)  # also checked when the config is composed; here for callers that skip that
    base = str(name) if name is not None else datetime.now().strftime("%Y%m%d-%H%M%S")
    for k in range(1, 1000):
        path = root / (base if k == 1 else f"{base}-{k}")
        try:
            path.mkdir(parents=True)
            return path
        except OSError as err:
            if not isinstance(err, FileExistsError):  # read-only, no permission, disk full
                raise CheckpointError(f"cannot create the run dir: {os_error_line(err)}") from None
            if name:  # an explicit name is the user's choice: refuse to mix two runs in one dir
                raise CheckpointError(
                    f"run dir {path} exists: pick another run.name, or resume it with resume={path}"
                ) from None
    raise CheckpointError(f"cannot create a run dir under {root}")


def os_error_line(err: OSError) -> str:
    """'PATH: ENOSPC (No space left on device)': what failed where, for the one line a run ends with."""
    code = errno.errorcode.get(err.errno, str(err.errno)) if err.errno is not None else type(err).__name__
    where = f"{err.filename}: " if err.filename else ""
    return f"{where}{code} ({err.strerror or err})"


def lock(run_dir: Path) -> IO[str]:
    """Hold RUN_DIR/.lock while a process trains in it: two resumes of one run would corrupt it."""
    fh = open(run_dir / ".lock", "w")  # noqa: SIM115 — held open for the whole run; closed by unlock()
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise CheckpointError(f"run dir {run_dir} is in use by another clfops process") from None
    return fh


def unlock(fh: IO[str]) -> None:
    fcntl.flock(fh, fcntl.LOCK_UN)
    fh.close()


def _lock_held(run_dir: Path) -> bool:
    try:
        fh = lock(run_dir)
    except (CheckpointError, OSError):
        return True
    unlock(fh)
    return False


def write_text(path: Path, text: str) -> None:
    """Every text file of a run dir goes through here: written atomically, credentials redacted."""
    atomic_write_text(path, redact_text(text))


def write_status(run_dir: Path, status: str, message: str | None = None) -> None:
    """status.json; when the disk is full the atomic write (a new file) fails, and the final status is
    written over the old file's bytes instead: a FAILED run must not stay RUNNING for want of one block."""
    path = run_dir / "status.json"
    text = redact_text(json.dumps({"status": status, "time": time.time(), "message": message}))
    try:
        atomic_write_text(path, text)
    except OSError:
        if not path.is_file():
            raise
        with path.open("r+b") as fh:  # the file's existing blocks: no allocation on tmpfs/ext4 for ~100 bytes
            fh.write(text.encode("utf-8"))
            fh.truncate()


def attach_log_file(path: Path) -> logging.Handler:
    """train.log gets clfops' and Lightning's messages, timestamped and redacted."""
    handler = _RunLog(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    install_log_filter(handler, logging.getLogger("clfops"))
    for name in ("clfops", "lightning.pytorch"):
        logging.getLogger(name).addHandler(handler)
    logging.getLogger("clfops").setLevel(logging.INFO)
    return handler


class _RunLog(logging.FileHandler):
    """train.log. A write that fails (disk full) stops this file, not the run, and prints no logging
    traceback: the run ends with one line naming the path, the console keeps the messages."""

    failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        self.failed = True


def detach_log_file(handler: logging.Handler) -> None:
    for name in ("clfops", "lightning.pytorch"):
        logging.getLogger(name).removeHandler(handler)
    with contextlib.suppress(OSError):  # its last flush on a full disk: the run's outcome is already reported
        handler.close()


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
    from importlib.metadata import version as _dist_version

    import lightning
    import mlflow
    import torch

    return {
        "version.clfops": _dist_version("clfops"),
        "version.torch": torch.__version__,
        "version.lightning": lightning.__version__,
        "version.mlflow": mlflow.__version__,
        "version.python": sys.version.split()[0],
    }


def list_runs(root: Path) -> list[dict[str, Any]]:
    """Every run dir under `root`, newest first: name, status, epochs done, best val/acc, test/acc, path."""
    found = []
    for run_dir in sorted((p for p in root.glob("*") if (p / "config.yaml").is_file()), key=_mtime, reverse=True):
        status = str(_read_json(run_dir / "status.json").get("status", "UNKNOWN"))
        if status == "RUNNING" and not _lock_held(run_dir):
            status = "STOPPED"  # the process died without a word (SIGKILL, power cut): resumable
        try:
            rows = read_metrics(run_dir / "metrics.csv")
        except (OSError, ValueError, KeyError):  # a damaged metrics.csv: the run is still listed
            rows = []
        epochs = [r for r in rows if "val/acc" in r or "train/acc" in r]
        best = max((r["val/acc"] for r in rows if "val/acc" in r), default=None)
        summary = _read_json(run_dir / "summary.json")
        test_acc = summary.get("test_acc")
        found.append(
            {
                "name": run_dir.name,
                "status": status,
                "epochs": len({r["epoch"] for r in epochs}),
                "best_val_acc": best,
                "test_acc": test_acc if isinstance(test_acc, (int, float)) else None,
                "resumable": (run_dir / "checkpoints" / "last.ckpt").is_file() and status != "FINISHED",
                "path": str(run_dir),
            }
        )
    return found


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object, or {} for a missing, unreadable, malformed or non-object file (one bad run dir must
    not stop `clfops runs` from listing the others)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of metrics.csv as dicts of floats (empty cells dropped)."""
    if not path.exists():
        return []
    rows = []
    with path.open(newline="") as fh:
        for raw in csv.DictReader(fh):
            row: dict[str, Any] = {k: float(v) for k, v in raw.items() if v not in ("", None)}
            row["step"], row["epoch"] = int(row["step"]), int(row.get("epoch", -1))
            rows.append(row)
    return rows
