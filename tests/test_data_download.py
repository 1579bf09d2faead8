"""Download logic without the internet: a closed loopback port and a local http.server only."""

from __future__ import annotations

import functools
import hashlib
import http.server
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from clfops.data import DataError
from clfops.data.download import REMOTE_DATASETS, download_file, ensure

IDX_NAMES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # urllib honours *_proxy variables; a proxy must not intercept the loopback requests below.
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def closed_port_url() -> str:
    """Base URL on a loopback port nothing listens on (bound, then released): connection refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, folder it serves) for a loopback http.server running in a thread."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=folder))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", folder
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_pinned_hashes_look_like_sha256() -> None:
    for remote in REMOTE_DATASETS.values():
        for item in remote.files:
            assert re.fullmatch(r"[0-9a-f]{64}", item.sha256), item.filename


def test_offline_error_is_one_line(tmp_path: Path, closed_port_url: str) -> None:
    root = tmp_path / "data"
    with pytest.raises(DataError) as info:
        ensure("fashion_mnist", root, mirror=closed_port_url, system_dir=None, timeout=5)
    message = str(info.value)
    assert message.startswith(f"cannot download {closed_port_url}train-images-idx3-ubyte.gz (offline?)")
    assert f"put the files in {root} or install Debian package dataset-fashion-mnist" in message
    assert "\n" not in message
    assert list(root.iterdir()) == []  # no partial file left behind


def test_hash_mismatch_leaves_nothing(tmp_path: Path, served: tuple[str, Path]) -> None:
    base_url, folder = served
    (folder / "cifar-10-binary.tar.gz").write_bytes(b"not the real archive")
    root = tmp_path / "data"
    with pytest.raises(DataError, match="sha256 mismatch"):
        ensure("cifar10", root, mirror=base_url)
    assert list(root.iterdir()) == []


def test_download_file_verified(tmp_path: Path, served: tuple[str, Path]) -> None:
    base_url, folder = served
    payload = bytes(range(256)) * 5000  # > one 1 MiB read chunk
    (folder / "blob.bin").write_bytes(payload)
    target = download_file(base_url + "blob.bin", tmp_path / "out" / "blob.bin", hashlib.sha256(payload).hexdigest())
    assert target.read_bytes() == payload
    assert [p.name for p in target.parent.iterdir()] == ["blob.bin"]


def test_http_error_status(tmp_path: Path, served: tuple[str, Path]) -> None:
    base_url, _ = served
    with pytest.raises(DataError, match=r"cannot download .*missing\.bin.*HTTP 404"):
        download_file(base_url + "missing.bin", tmp_path / "missing.bin", "0" * 64)


def test_present_files_skip_network(tmp_path: Path, closed_port_url: str) -> None:
    for name in IDX_NAMES[:3]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"x")  # uncompressed counts too
    assert ensure("mnist", tmp_path, mirror=closed_port_url) == tmp_path
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(b"x")
    assert ensure("cifar10", tmp_path, mirror=closed_port_url) == tmp_path


def test_debian_package_folder_used(tmp_path: Path, closed_port_url: str) -> None:
    system_dir = tmp_path / "usr-share"
    system_dir.mkdir()
    for name in IDX_NAMES:
        (system_dir / name).write_bytes(b"x")
    result = ensure("fashion-mnist", tmp_path / "data", mirror=closed_port_url, system_dir=system_dir)
    assert result == system_dir
    with pytest.raises(DataError, match=r"cannot download .* \(offline\?\): put the files in"):
        ensure("mnist", tmp_path / "data", mirror=closed_port_url, system_dir=system_dir)


def test_unknown_dataset(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown data set 'imagenet'"):
        ensure("imagenet", tmp_path)
