"""Fetch the public data sets when their files are absent: official URLs, pinned sha256, atomic writes.

Hash provenance (never invented; checked against independent public copies):
* MNIST: the sha256 of the four .gz files as published with the ossci-datasets / yann.lecun.com
  mirrors (same bytes; torchvision pins their md5).
* Fashion-MNIST: the sha256 of the four .gz files on the Zalando S3 bucket, published next to the
  official md5 (the md5 torchvision pins, e.g. 8d4fb7e6c68d591d4c3dfef9ec88bf0d for train images;
  some third-party mirrors serve recompressed files with other hashes). The Debian package
  `dataset-fashion-mnist` ships recompressed .gz files (different bytes, same images), so files taken
  from /usr/share/datasets/fashion-mnist are used as they are, not hash-checked.
* CIFAR-10: sha256 of cifar-10-binary.tar.gz (170,052,171 bytes; md5 c32a1d4ab5d03f1284b67883e8d87530
  on the CIFAR page).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from clfops.data import DataError
from clfops.data.cifar import ARCHIVE_NAME, BATCHES_DIR, TEST_FILE, TRAIN_FILES
from clfops.data.idx import IDX_FILES, idx_files_present

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_TIMEOUT_S = 20.0
_CHUNK = 1 << 20
# What urllib raises for an unreachable host, refused connection, HTTP error status, timeout or a
# cut-off transfer: URLError/HTTPError, TimeoutError and ConnectionError are all OSError subclasses.
_NETWORK_ERRORS = (OSError, http.client.HTTPException)


@dataclass(frozen=True)
class RemoteFile:
    filename: str
    sha256: str


@dataclass(frozen=True)
class RemoteDataset:
    base_url: str  # ends with "/"; file names are appended
    files: tuple[RemoteFile, ...]


REMOTE_DATASETS: dict[str, RemoteDataset] = {
    "fashion_mnist": RemoteDataset(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        (
            RemoteFile(
                "train-images-idx3-ubyte.gz",
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            ),
            RemoteFile(
                "train-labels-idx1-ubyte.gz",
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            ),
            RemoteFile(
                "t10k-images-idx3-ubyte.gz",
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            ),
            RemoteFile(
                "t10k-labels-idx1-ubyte.gz",
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            ),
        ),
    ),
    "mnist": RemoteDataset(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        (
            RemoteFile(
                "train-images-idx3-ubyte.gz",
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            ),
            RemoteFile(
                "train-labels-idx1-ubyte.gz",
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            ),
            RemoteFile(
                "t10k-images-idx3-ubyte.gz",
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            ),
            RemoteFile(
                "t10k-labels-idx1-ubyte.gz",
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            ),
        ),
    ),
    "cifar10": RemoteDataset(
        "https://www.cs.toronto.edu/~kriz/",
        (RemoteFile(ARCHIVE_NAME, "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"),),
    ),
}


def _offline_hint(name: str, root: Path) -> str:
    if name == "fashion_mnist":
        return f"put the files in {root} or install Debian package dataset-fashion-mnist"
    if name == "cifar10":
        return f"put {ARCHIVE_NAME} or {BATCHES_DIR}/ in {root}"
    return f"put the files in {root}"


def _copy_response(url: str, out: BinaryIO, timeout: float, hint: str) -> str:
    """Stream `url` into `out`; returns the sha256 of what was written."""
    digest = hashlib.sha256()
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except _NETWORK_ERRORS as exc:
        raise DataError(f"cannot download {url} (offline?): {hint} [{_reason(exc)}]") from None
    with response:
        while True:
            try:
                chunk = response.read(_CHUNK)
            except _NETWORK_ERRORS as exc:  # connection dropped mid-transfer
                raise DataError(f"cannot download {url} (offline?): {hint} [{_reason(exc)}]") from None
            if not chunk:
                return digest.hexdigest()
            out.write(chunk)
            digest.update(chunk)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):  # reachable, but e.g. 404: say so, not just "offline?"
        return f"HTTP {exc.code} {exc.reason}"
    reason = getattr(exc, "reason", None) or exc
    return " ".join(str(reason).split()) or type(exc).__name__


def download_file(url: str, target: Path, sha256: str, timeout: float = DEFAULT_TIMEOUT_S, hint: str = "") -> Path:
    """Download `url` to `target` through a temp file in the same folder, verified, then renamed.

    The rename happens only after the hash matched, so `target` is never a partial or wrong file,
    and a crashed run leaves at most a hidden `.part` temp file (removed on any error here).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        try:
            with os.fdopen(fd, "wb") as out:
                got = _copy_response(url, out, timeout, hint or f"put {target.name} in {target.parent}")
        except OSError as exc:  # network errors are already DataError; this is the local disk
            raise DataError(f"{tmp}: cannot write download ({exc.strerror or exc})") from None
        if got != sha256:
            raise DataError(f"{url}: sha256 mismatch (got {got}, expected {sha256}): corrupt or changed download")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def files_present(name: str, root: Path) -> bool:
    """Whether `root` already holds what the reader for `name` needs (no hash check: files a user put
    there may be uncompressed, and the readers validate the format anyway)."""
    if name == "cifar10":
        return (
            (root / ARCHIVE_NAME).is_file()
            or all((root / BATCHES_DIR / f).is_file() for f in (*TRAIN_FILES, TEST_FILE))
            or all((root / f).is_file() for f in (*TRAIN_FILES, TEST_FILE))
        )
    return idx_files_present(root)


def missing_files(name: str, root: Path) -> list[str]:
    """The files the reader for `name` needs that `root` lacks (empty when files_present)."""
    if files_present(name, root):
        return []
    if name == "cifar10":
        return [ARCHIVE_NAME]  # or its extracted batches: the message names the archive the download gives
    return [f"{s}(.gz)" for s in IDX_FILES.values() if not ((root / f"{s}.gz").is_file() or (root / s).is_file())]


def ensure(
    name: str,
    root: Path,
    mirror: str | None = None,
    system_dir: Path | None = DEBIAN_FASHION_MNIST,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Return the folder holding data set `name` ("fashion_mnist", "mnist", "cifar10"), downloading
    into `root` when needed.

    Order: files already in `root`; for fashion_mnist the Debian package folder `system_dir`
    (returned as is, nothing copied); else download each missing file from `mirror` (a base URL
    ending in "/", default the official one) with sha256 verification.
    """
    key = name.lower().replace("-", "_")
    if key not in REMOTE_DATASETS:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(sorted(REMOTE_DATASETS))}")
    root = Path(root)
    if files_present(key, root):
        return root
    if key == "fashion_mnist" and system_dir is not None and idx_files_present(system_dir):
        return system_dir
    remote = REMOTE_DATASETS[key]
    base_url = mirror if mirror is not None else remote.base_url
    for item in remote.files:
        target = root / item.filename
        if target.is_file() or target.with_suffix("").is_file():  # .gz or raw already there
            continue
        download_file(base_url + item.filename, target, item.sha256, timeout, _offline_hint(key, root))
    return root
