"""Data set by name: find or fetch the files, read them, and adapt channels/size when asked."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from clfops.data import DataError, Source, Split
from clfops.data.cache import default_cache_dir
from clfops.data.cifar import load_cifar10
from clfops.data.download import DEBIAN_FASHION_MNIST, ensure, missing_files
from clfops.data.folder import load_folder
from clfops.data.hashing import tensor_sha256
from clfops.data.idx import load_fashion_mnist, load_mnist

DATASETS = ("fashion_mnist", "mnist", "cifar10", "folder")


def default_root(name: str) -> Path:
    if name == "fashion_mnist" and DEBIAN_FASHION_MNIST.is_dir():
        return DEBIAN_FASHION_MNIST
    return Path("data") / name


def load_source(
    name: str, root: str | None, channels: int | None = None, size: tuple[int, int] | None = None
) -> Source:
    """Read data set `name` from `root` (downloaded there first when missing; folders are never fetched)."""
    if name == "folder":
        if not root:
            raise DataError("data.root is required for data=folder: data.root=/path/to/class/folders")
        return load_folder(Path(root), channels=channels, size=size)
    if name not in DATASETS:
        raise DataError(f"data.name={name!r}: valid data sets are {', '.join(DATASETS)}")
    if root:  # the user's folder is used as given: no system copy, no download mixed into it
        missing = missing_files(name, Path(root))
        if missing:
            raise DataError(
                f"data.root={root} lacks {', '.join(missing)}: put the file(s) there, or leave data.root unset "
                f"(`clfops fetch {name}` downloads into data/{name})"
            )
        folder = Path(root)
    else:  # unset: the system copy (fashion_mnist) or data/<name>, downloaded when missing
        folder = ensure(name, default_root(name))
    if name == "cifar10":
        source = load_cifar10(folder)
    else:  # IDX: decoded tensors cached by the files' sha256 (gunzip + parse each run is ~0.7 s wasted)
        reader = load_fashion_mnist if name == "fashion_mnist" else load_mnist
        source = reader(folder, default_cache_dir())
    return adapt(source, channels, size)


def adapt(source: Source, channels: int | None, size: tuple[int, int] | None) -> Source:
    """Convert channels (grey<->RGB) and size (bilinear) of a whole data set once, up front."""
    want_c = channels or source.channels
    want_hw = tuple(size) if size else source.size
    if want_c == source.channels and want_hw == source.size:
        return source
    if want_c not in (1, 3):
        raise DataError(f"data.channels={channels}: must be 1 or 3")

    def convert(split: Split) -> Split:
        x = split.x
        if want_c != x.shape[1]:
            if want_c == 3:
                x = x.expand(-1, 3, -1, -1)
            else:  # ITU-R 601 luma, as Pillow's convert("L")
                w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
                x = (x.float() * w).sum(1, keepdim=True).round().to(torch.uint8)
        if tuple(x.shape[2:]) != want_hw:
            x = F.interpolate(x.float(), size=want_hw, mode="bilinear", align_corners=False, antialias=True)
            x = x.round().clamp(0, 255).to(torch.uint8)
        return Split(x.contiguous(), split.y)

    train, test = convert(source.train), convert(source.test)
    val = convert(source.val) if source.val is not None else None
    extra = (val.x, val.y) if val is not None else ()
    sha = tensor_sha256(train.x, train.y, test.x, test.y, *extra)
    return Source(source.name, train, test, source.classes, sha, val, source.test_split)
