"""CIFAR-10 reader for the *binary* distribution (never the pickle one: unpickling runs code).

Layout of `cifar-10-batches-bin/`: `data_batch_1.bin`..`data_batch_5.bin` (train), `test_batch.bin`
(test), `batches.meta.txt` (one class name per line). Each record is 1 label byte followed by
3072 image bytes: 1024 red, 1024 green, 1024 blue, each 32x32 row-major, i.e. already CHW.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from clfops.data import DataError, Source, Split
from clfops.data.hashing import tensor_sha256

CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
BATCHES_DIR = "cifar-10-batches-bin"
ARCHIVE_NAME = "cifar-10-binary.tar.gz"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
META_FILE = "batches.meta.txt"
_SHAPE = (3, 32, 32)
_RECORD = 1 + 3 * 32 * 32


def _has_batches(folder: Path) -> bool:
    return all((folder / name).is_file() for name in (*TRAIN_FILES, TEST_FILE))


def _safe_members(archive: tarfile.TarFile, archive_path: Path) -> list[tarfile.TarInfo]:
    """Members to extract: plain files/dirs under `cifar-10-batches-bin/`, nothing that escapes.

    A hostile or damaged archive could hold `../x`, absolute paths or links pointing outside the
    target; those raise instead of being skipped, since the official archive has none.
    """
    members = []
    for member in archive.getmembers():
        parts = PurePosixPath(member.name).parts
        if member.name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise DataError(f"{archive_path}: unsafe path in archive: {member.name!r}")
        if not (member.isfile() or member.isdir()):
            raise DataError(f"{archive_path}: archive holds a link or special file: {member.name!r}")
        if parts and parts[0] == BATCHES_DIR:
            members.append(member)
    return members


def extract_archive(archive_path: Path, root: Path) -> Path:
    """Extract `cifar-10-binary.tar.gz` into `root`; returns `root/cifar-10-batches-bin`.

    Extraction goes to a temporary folder in `root` first and is renamed into place at the end, so
    an interrupted run never leaves a half-filled `cifar-10-batches-bin/` that looks complete.
    """
    target = root / BATCHES_DIR
    if target.exists():
        raise DataError(f"{target} exists but is incomplete: remove it to re-extract {archive_path}")
    staging = Path(tempfile.mkdtemp(prefix=".cifar-extract-", dir=root))
    try:
        with tarfile.open(archive_path, "r:gz") as archive:
            members = _safe_members(archive, archive_path)
            # The "data" filter (Python >= 3.11.4 / 3.10.12) re-checks every path and strips modes.
            if hasattr(tarfile, "data_filter"):
                archive.extractall(staging, members=members, filter="data")
            else:  # pragma: no cover - old Pythons; members were already validated above
                archive.extractall(staging, members=members)
        if not _has_batches(staging / BATCHES_DIR):
            raise DataError(f"{archive_path}: archive does not contain {BATCHES_DIR}/ with all batch files")
        os.replace(staging / BATCHES_DIR, target)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{archive_path}: cannot extract ({exc})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def find_batches_dir(root: Path) -> Path:
    """`root` itself, `root/cifar-10-batches-bin`, or that folder extracted from the archive in `root`."""
    for candidate in (root, root / BATCHES_DIR):
        if _has_batches(candidate):
            return candidate
    archive = root / ARCHIVE_NAME
    if archive.is_file():
        return extract_archive(archive, root)
    raise DataError(
        f"{root}: no CIFAR-10 binary files (expected {BATCHES_DIR}/data_batch_1..5.bin and {TEST_FILE}, "
        f"or {ARCHIVE_NAME})"
    )


def read_batch(path: Path, num_classes: int = len(CIFAR10_CLASSES)) -> Split:
    """Read one `.bin` batch file into a Split of (N, 3, 32, 32) uint8 images."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not data or len(data) % _RECORD:
        raise DataError(
            f"{path}: truncated or not a CIFAR-10 batch: {len(data)} bytes is not a multiple of "
            f"the {_RECORD}-byte record"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, _RECORD)
    labels = torch.from_numpy(records[:, 0].astype(np.int64))
    if int(labels.max()) >= num_classes:
        raise DataError(f"{path}: label {int(labels.max())} out of range for {num_classes} classes")
    images = torch.from_numpy(records[:, 1:].reshape(-1, *_SHAPE).copy())
    return Split(x=images, y=labels)


def read_class_names(folder: Path) -> list[str]:
    """Class names from `batches.meta.txt`, or the standard ten when the file is absent."""
    meta = folder / META_FILE
    if not meta.is_file():
        return list(CIFAR10_CLASSES)
    try:
        names = [line.strip() for line in meta.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{meta}: cannot read class names ({exc})") from None
    if not names:
        raise DataError(f"{meta}: no class names in file")
    return names


def load_cifar10(root: Path, name: str = "cifar10") -> Source:
    """Load CIFAR-10 (binary version) from `root`; see `find_batches_dir` for accepted layouts."""
    folder = find_batches_dir(Path(root))
    classes = read_class_names(folder)
    parts = [read_batch(folder / file_name, len(classes)) for file_name in TRAIN_FILES]
    train = Split(x=torch.cat([p.x for p in parts]), y=torch.cat([p.y for p in parts]))
    test = read_batch(folder / TEST_FILE, len(classes))
    digest = tensor_sha256(train.x, train.y, test.x, test.y)
    return Source(name=name, train=train, test=test, classes=classes, sha256=digest)
