"""Decoded data sets cached as tensor files: decode once (gzip, Pillow), then load in milliseconds.

One entry is `STEM.safetensors` (the four tensors, six with a given validation split; safetensors, not
pickle: a cache file must never be unpickled) + `STEM.json` (class names, content sha256, test split), written
tensors first, JSON last and each atomically, so an entry counts only when both exist and concurrent runs never
read half a file. The caller picks the
stem: a hash of whatever identifies the decoded result (file contents or stat data, decoding parameters).
A damaged, unreadable or unwritable cache is only a lost speed-up: the caller decodes as if it were absent.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from clfops.data import Source, Split

logger = logging.getLogger(__name__)

CACHE_ENV = "CLFOPS_CACHE_DIR"
_KEYS = ("train_x", "train_y", "test_x", "test_y")


def default_cache_dir() -> Path:
    """$CLFOPS_CACHE_DIR, else $XDG_CACHE_HOME/clfops, else ~/.cache/clfops (the XDG convention)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clfops"


def read_cached(cache_dir: Path, stem: str, name: str) -> Source | None:
    """The cached Source for `stem`, or None when absent or unreadable."""
    tensors_path, meta_path = cache_dir / f"{stem}.safetensors", cache_dir / f"{stem}.json"
    if not (tensors_path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        tensors = load_file(str(tensors_path))
        train_x, train_y, test_x, test_y = (tensors[key] for key in _KEYS)
        train, test = Split(x=train_x, y=train_y), Split(x=test_x, y=test_y)
        test_split = str(meta.get("test_split", "test"))
        val = Split(x=tensors["val_x"], y=tensors["val_y"]) if "val_x" in tensors else None
        val = test if test_split == "val" else val
        return Source(name, train, test, list(meta["classes"]), meta["sha256"], val, test_split)
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        logger.warning("ignoring unreadable cache %s: %s", tensors_path, exc)
        return None


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write via a temp file in the same folder + os.replace, so readers never see half a file."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_cached(cache_dir: Path, stem: str, source: Source, stale_prefix: str | None = None) -> None:
    """Store `source` under `stem`; entries `stale_prefix-*` other than `stem` (older file states) are removed."""
    values = (source.train.x, source.train.y, source.test.x, source.test.y)
    tensors = {key: value.contiguous() for key, value in zip(_KEYS, values, strict=True)}
    if source.val is not None and source.test_split != "val":  # test_split=val: test *is* val, stored once
        tensors |= {"val_x": source.val.x.contiguous(), "val_y": source.val.y.contiguous()}
    meta = {"classes": source.classes, "sha256": source.sha256, "test_split": source.test_split}
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(cache_dir / f"{stem}.safetensors", lambda tmp: save_file(tensors, str(tmp)))
        _atomic_write(cache_dir / f"{stem}.json", lambda tmp: tmp.write_text(json.dumps(meta), encoding="utf-8"))
        if stale_prefix is not None:
            for old in cache_dir.glob(f"{stale_prefix}-*"):
                if old.stem != stem and old.suffix in (".safetensors", ".json"):
                    old.unlink(missing_ok=True)
    except OSError as exc:  # read-only folder, full disk: still usable, just not cached
        logger.warning("cannot write data cache in %s: %s", cache_dir, exc)
