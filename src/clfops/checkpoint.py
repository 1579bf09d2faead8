"""Checkpoints: atomic writes and loads that never unpickle.

Lightning writes checkpoints through a `CheckpointIO` plugin; ours writes to a temp file in the same
directory, fsyncs it and renames it over the target, so a crash mid-write leaves the previous file whole,
and loads with `torch.load(weights_only=True)`, which refuses any pickled object that is not a tensor or
plain data (a crafted checkpoint cannot run code).
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO

_UMASK = os.umask(0)
os.umask(_UMASK)


class CheckpointError(Exception):
    """A checkpoint that cannot be used (missing, truncated, pickled objects, incompatible): one line."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the user's usual mode
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


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


class AtomicCheckpointIO(CheckpointIO):
    """Lightning CheckpointIO: atomic save, weights_only load."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        buf = io.BytesIO()
        torch.save(checkpoint, buf)
        atomic_write_bytes(Path(path), buf.getvalue())

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return load_checkpoint(Path(path))

    def remove_checkpoint(self, path: Any) -> None:
        Path(path).unlink(missing_ok=True)
