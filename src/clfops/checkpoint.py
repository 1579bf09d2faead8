"""Checkpoints: atomic writes and loads that never unpickle.

Lightning writes checkpoints through a `CheckpointIO` plugin; ours writes to a temp file in the same
directory, fsyncs it and renames it over the target, so a crash mid-write leaves the previous file whole,
and loads with `torch.load(weights_only=True)`, which refuses any pickled object that is not a tensor or
plain data (a crafted checkpoint cannot run code).
"""

from __future__ import annotations

import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clfops.errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)


class CheckpointError(UserError):
    """A checkpoint that cannot be used (missing, truncated, pickled objects, incompatible): one line."""


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a torn one.

    `durable=False` skips the two fsyncs (~2 ms together): still atomic against a crash of this process, but a
    power cut may keep the previous version. For files rewritten often whose last version is made durable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the user's usual mode
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if not durable:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)


def atomic_write_text(path: Path, text: str, durable: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), durable)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint with weights_only=True; every failure becomes a one-line CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "unsupported object"
        if "Weights only load failed" in str(err) or "Unsupported global" in str(err):
            raise CheckpointError(
                f"{path}: refused, it holds pickled Python objects (not plain tensors/data): {first[:160]}"
            ) from None
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({first[:160]})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({first[:160]})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a clfops/Lightning checkpoint (no state_dict)")
    return ckpt


# ----- resume -----------------------------------------------------------------------------------------
# What may differ between the checkpoint's config and the resumed one. Anything that changes the network,
# the data it sees or the optimisation state breaks the run; the rest (more epochs: OneCycle/cosine stretch
# over the new length; tracking, logging) is allowed and recorded.
INCOMPATIBLE = (
    "model",
    "optimizer",  # its state (moments, LR) comes from the checkpoint: a changed value would be ignored
    "scheduler",
    "data.name",
    "data.root",
    "data.channels",
    "data.size",
    "data.train_limit",
    "data.val_fraction",
    "data.mean",
    "data.std",
    "trainer.channels_last",
)


@dataclass(frozen=True)
class ResumePoint:
    run_dir: Path
    checkpoint: Path
    config: dict[str, Any]  # the resolved config the checkpoint was written with
    classes: list[str]
    data_sha256: str
    epoch: int  # the epoch (0-based) the checkpoint was written in
    global_step: int
    mid_epoch: bool


def find_resume(target: str, run_dir_of_run_id: Any = None) -> ResumePoint:
    """resume=RUN_DIR | a .ckpt file | an MLflow run id (looked up with `run_dir_of_run_id(id)`)."""
    path = Path(target)
    if not path.exists() and run_dir_of_run_id is not None and len(target) == 32 and target.isalnum():
        path = Path(run_dir_of_run_id(target))
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise CheckpointError(f"resume={target}: no checkpoint at {path} (give a run dir, a .ckpt or a run id)")
    ckpt = load_checkpoint(path)
    info = ckpt.get("clfops")
    if not isinstance(info, dict):
        raise CheckpointError(f"{path}: not written by clfops train (no run config inside)")
    state = ckpt.get("epoch_state", {})
    return ResumePoint(
        run_dir=path.resolve().parent.parent,
        checkpoint=path,
        config=info["config"],
        classes=list(info["classes"]),
        data_sha256=info["data_sha256"],
        epoch=int(ckpt.get("epoch", 0)),
        global_step=int(ckpt.get("global_step", 0)),
        mid_epoch=bool(state.get("mid_epoch", False)),
    )


def _get(tree: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def check_compatible(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Raise on a change that breaks the run; return the harmless changes (dotted keys) to record."""
    for key in INCOMPATIBLE:
        if _get(old, key) != _get(new, key):
            raise CheckpointError(
                f"cannot resume: {key} changed from {_get(old, key)!r} to {_get(new, key)!r} (start a new run instead)"
            )
    return sorted(k for k in _flat_keys(new) if k != "resume" and _get(old, k) != _get(new, k))


def _flat_keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            keys += _flat_keys(value, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys
