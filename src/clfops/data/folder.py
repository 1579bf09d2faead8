"""Image-folder reader: `root/<class>/*.png|jpg|jpeg|bmp|webp`, decoded once with Pillow, then cached.

Layouts: `root/train/<class>/...` with `root/test/<class>/...`, `root/val/<class>/...` or both is used as given
(a given val/ is the validation split, instead of data.val_fraction of train; without test/, the test metrics
come from val/ and the run records `data.test_split=val`). For `root/<class>/...`
the test split is carved per class, deterministically: files ordered by sha256 of their path relative
to `root`, the first `round(n * test_fraction)` go to test (at least 1 when the class has 2+ images,
never all). Hash order, not name order, keeps e.g. all `zz_*` files from landing in one split.

Classes are the sorted sub-folder names; folders and files whose name starts with "." are ignored.
The decoded tensors are cached in `cache_dir` as safetensors (not pickle: a cache file must not be
able to run code) keyed by every file's (relative path, size, mtime_ns) and the decode parameters.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clfops.data import DataError, Source, Split
from clfops.data.cache import read_cached, write_cached
from clfops.data.hashing import tensor_sha256
from clfops.image_bytes import GRAY_MODES, PIL_ERRORS, ImageError
from clfops.image_bytes import decode as decode_image

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
DEFAULT_TEST_FRACTION = 0.2
CACHE_DIR_NAME = ".clfops-cache"
LAYOUTS = (
    "accepted layouts: root/<class>/<image> (test carved per class), root/train/<class>/ with root/test/<class>/, "
    "root/val/<class>/ or both"
)
_CACHE_VERSION = 2  # bump when decoding changes, so stale caches are not reused


@dataclass(frozen=True)
class _Entry:
    path: Path
    label: int
    split: str  # train | val | test


@dataclass(frozen=True)
class FolderLoad:
    source: Source
    cache_hit: bool  # True when the tensors came from the cache and no image was decoded


def _bad_image(path: Path, exc: BaseException) -> DataError:
    detail = (str(exc).splitlines() or [type(exc).__name__])[0]
    return DataError(f"{path}: unreadable image ({detail})")


def _subdirs(folder: Path, skip: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and p != skip)


def _images(folder: Path, required: bool) -> list[Path]:
    found = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
    if required and not found:  # an empty class would silently never be predicted
        raise DataError(f"{folder}: class folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return sorted(p for p in found if p.is_file())


def _carve_test(files: list[Path], root: Path, test_fraction: float) -> set[Path]:
    if len(files) < 2 or test_fraction <= 0:
        return set()
    n_test = min(len(files) - 1, max(1, round(len(files) * test_fraction)))
    ordered = sorted(files, key=lambda p: hashlib.sha256(p.relative_to(root).as_posix().encode()).hexdigest())
    return set(ordered[:n_test])


def _layout_error(root: Path, found: str) -> DataError:
    return DataError(f"{root}: {found}; {LAYOUTS}")


def check_layout(root: Path) -> list[str]:
    """The split folders `root` gives ([] for root/<class>), from its top level only: cheap enough to refuse a
    wrong layout before a run dir exists (`clfops train` calls it first)."""
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found")
    given = [name for name in ("val", "test") if (root / name).is_dir()]
    if (root / "train").is_dir():
        if not given:
            raise _layout_error(root, "has a train/ folder but neither val/ nor test/")
        return ["train", *given]
    if given:
        raise _layout_error(root, f"has a {given[0]}/ folder but no train/ folder")
    return []


def _scan_split_layout(root: Path, skip: Path) -> tuple[list[str], list[_Entry]]:
    """root/train/<class> with root/test/<class>, root/val/<class> or both."""
    given = [name for name in ("val", "test") if (root / name).is_dir()]
    class_dirs = _subdirs(root / "train", skip)
    classes = [d.name for d in class_dirs]
    index = {name: i for i, name in enumerate(classes)}
    entries = []
    for class_dir in class_dirs:
        entries += [_Entry(f, index[class_dir.name], "train") for f in _images(class_dir, required=True)]
    for split in given:
        for class_dir in _subdirs(root / split, skip):
            if class_dir.name not in index:
                raise DataError(f"{class_dir}: class {class_dir.name!r} is in {split}/ but not in train/")
            entries += [_Entry(f, index[class_dir.name], split) for f in _images(class_dir, required=False)]
    return classes, entries


def _scan_flat_layout(root: Path, skip: Path, test_fraction: float) -> tuple[list[str], list[_Entry]]:
    class_dirs = _subdirs(root, skip)
    entries = []
    for label, class_dir in enumerate(class_dirs):
        files = _images(class_dir, required=True)
        test = _carve_test(files, root, test_fraction)
        entries += [_Entry(f, label, "test" if f in test else "train") for f in files]
    return [d.name for d in class_dirs], entries


def scan_folder(root: Path, test_fraction: float, skip: Path) -> tuple[list[str], list[_Entry]]:
    """Class names and every image with its label and split; `skip` is the cache folder."""
    if check_layout(root):
        classes, entries = _scan_split_layout(root, skip)
    else:
        classes, entries = _scan_flat_layout(root, skip, test_fraction)
    if not classes:
        raise _layout_error(root, "no class sub-folders")
    return classes, entries


def _probe(path: Path) -> tuple[str, tuple[int, int]]:
    """Mode and (height, width) from the header only: Image.open does not decode pixels."""
    try:
        with Image.open(path) as img:
            return img.mode, (img.height, img.width)
    except PIL_ERRORS as exc:
        raise _bad_image(path, exc) from None


def _decode(path: Path, channels: int, size: tuple[int, int]) -> np.ndarray:
    """One image as a (channels, height, width) uint8 array, by the decoder predict and serving use too."""
    try:
        return decode_image(path, channels, size)
    except ImageError as exc:
        raise DataError(f"{path}: {exc}") from None


def _decode_all(
    entries: list[_Entry], classes: list[str], channels: int | None, size: tuple[int, int] | None, name: str
) -> Source:
    probes = [_probe(e.path) for e in entries]
    if channels is None:
        channels = 1 if all(mode in GRAY_MODES for mode, _ in probes) else 3
    if size is None:
        size = Counter(shape for _, shape in probes).most_common(1)[0][0]
    x = np.empty((len(entries), channels, *size), dtype=np.uint8)
    for i, entry in enumerate(entries):
        x[i] = _decode(entry.path, channels, size)
    images = torch.from_numpy(x)
    labels = torch.tensor([e.label for e in entries], dtype=torch.int64)

    def split(name: str) -> Split:
        keep = torch.tensor([e.split == name for e in entries], dtype=torch.bool)
        return Split(x=images[keep].contiguous(), y=labels[keep].contiguous())

    has = {e.split for e in entries}
    train = split("train")
    val = split("val") if "val" in has else None
    # No test/ folder next to val/: the test metrics come from val, and the run records it (data.test_split).
    test_split = "val" if val is not None and "test" not in has else "test"
    test = val if val is not None and test_split == "val" else split("test")
    extra = (val.x, val.y) if val is not None else ()
    digest = tensor_sha256(train.x, train.y, test.x, test.y, *extra)
    return Source(name, train, test, classes, digest, val, test_split)


def _cache_stem(
    root: Path,
    entries: list[_Entry],
    channels: int | None,
    size: tuple[int, int] | None,
    test_fraction: float,
) -> tuple[str, str]:
    """(prefix, stem): prefix identifies root + parameters, stem adds the files' state.

    Stat data (size, mtime_ns) instead of file contents keeps a cache hit cheap: no image is read.
    """
    params = json.dumps([_CACHE_VERSION, str(root.resolve()), channels, size, test_fraction])
    prefix = hashlib.sha256(params.encode()).hexdigest()[:16]
    content = hashlib.sha256(params.encode())
    for entry in entries:
        stat = entry.path.stat()
        content.update(f"{entry.path.relative_to(root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return prefix, f"{prefix}-{content.hexdigest()[:32]}"


def _check_params(channels: int | None, size: tuple[int, int] | None, test_fraction: float) -> None:
    if channels not in (None, 1, 3):
        raise DataError(f"channels must be 1, 3 or None, got {channels}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise DataError(f"size must be (height, width) with positive values, got {size}")
    if not 0 <= test_fraction < 1:
        raise DataError(f"test_fraction must be in [0, 1), got {test_fraction}")


def read_folder(
    root: Path,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    cache_dir: Path | None = None,
    name: str | None = None,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> FolderLoad:
    """Load an image folder (see module docstring), reporting whether the cache was hit.

    channels: 1 or 3; None = 1 if every image is grayscale, else 3.
    size: (height, width); None = the most common size. Other sizes are resized (bilinear).
    cache_dir: default `root/.clfops-cache`. test_fraction: only for the layout without train/test.
    """
    root = Path(root)
    _check_params(channels, size, test_fraction)
    size = None if size is None else (int(size[0]), int(size[1]))
    cache = Path(cache_dir) if cache_dir is not None else root / CACHE_DIR_NAME
    classes, entries = scan_folder(root, test_fraction, skip=cache)
    prefix, stem = _cache_stem(root, entries, channels, size, test_fraction)
    label = name if name is not None else root.resolve().name
    cached = read_cached(cache, stem, label)
    if cached is not None:
        return FolderLoad(source=cached, cache_hit=True)
    source = _decode_all(entries, classes, channels, size, label)
    write_cached(cache, stem, source, stale_prefix=prefix)
    return FolderLoad(source=source, cache_hit=False)


def load_folder(
    root: Path,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    cache_dir: Path | None = None,
    name: str | None = None,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> Source:
    """`read_folder` without the cache-hit flag."""
    return read_folder(root, channels, size, cache_dir, name, test_fraction).source
