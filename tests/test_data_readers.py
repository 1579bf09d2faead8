"""IDX, CIFAR-10 binary and image-folder readers, on small files written in the exact on-disk formats."""

from __future__ import annotations

import gzip
import io
import os
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clfops.data import DataError
from clfops.data import folder as folder_module
from clfops.data.cifar import BATCHES_DIR, CIFAR10_CLASSES, load_cifar10
from clfops.data.folder import read_folder
from clfops.data.hashing import tensor_sha256
from clfops.data.idx import FASHION_MNIST_CLASSES, MNIST_CLASSES, load_idx_dataset, read_idx

RNG = np.random.default_rng(0)

# ---------------------------------------------------------------- IDX


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


def write_idx(path: Path, array: np.ndarray, code: int = 0x08) -> Path:
    data = idx_bytes(array, code)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def make_idx_dataset(root: Path, n_train: int = 30, n_test: int = 12) -> dict[str, np.ndarray]:
    arrays = {
        "train-images-idx3-ubyte.gz": RNG.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": RNG.integers(0, 10, n_train, dtype=np.uint8),  # raw, not gzipped
        "t10k-images-idx3-ubyte": RNG.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": RNG.integers(0, 10, n_test, dtype=np.uint8),
    }
    for file_name, array in arrays.items():
        write_idx(root / file_name, array)
    return arrays


def test_idx_dataset_round_trip_gz_and_raw(tmp_path: Path) -> None:
    arrays = make_idx_dataset(tmp_path)
    source = load_idx_dataset("fashion_mnist", tmp_path, FASHION_MNIST_CLASSES)
    assert source.train.x.shape == (30, 1, 28, 28) and source.test.x.shape == (12, 1, 28, 28)
    assert source.train.x.dtype == torch.uint8 and source.train.y.dtype == torch.int64
    assert np.array_equal(source.train.x[:, 0].numpy(), arrays["train-images-idx3-ubyte.gz"])
    assert np.array_equal(source.train.y.numpy(), arrays["train-labels-idx1-ubyte"])
    assert np.array_equal(source.test.x[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert np.array_equal(source.test.y.numpy(), arrays["t10k-labels-idx1-ubyte.gz"])
    assert source.classes == FASHION_MNIST_CLASSES and source.channels == 1 and source.size == (28, 28)
    assert source.sha256 == tensor_sha256(source.train.x, source.train.y, source.test.x, source.test.y)
    assert [str(i) for i in range(10)] == MNIST_CLASSES


@pytest.mark.parametrize("code", [0x09, 0x0B, 0x0C, 0x0D, 0x0E])
def test_read_idx_big_endian_dtypes(tmp_path: Path, code: int) -> None:
    array = (RNG.standard_normal((3, 4, 5)) * 100).astype(np.int64).clip(-128, 127)
    path = write_idx(tmp_path / "x.idx", array, code)
    assert np.array_equal(read_idx(path).numpy(), array)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda data: data[:-5], "truncated"),
        (lambda data: data + b"\x00", "trailing bytes"),
        (lambda data: b"\x01" + data[1:], "not an IDX file"),
        (lambda data: data[:2] + b"\x42" + data[3:], "unknown IDX dtype"),
        (lambda data: data[:10], "truncated IDX header"),
        (lambda data: data[:3], "shorter than"),
    ],
)
def test_read_idx_rejects_corrupt_files(tmp_path: Path, mutate, expected: str) -> None:
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(mutate(idx_bytes(np.zeros((4, 28, 28), dtype=np.uint8))))
    with pytest.raises(DataError, match=expected) as info:
        read_idx(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_read_idx_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((4, 28, 28), dtype=np.uint8)))[:-12])
    with pytest.raises(DataError, match="gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_idx_dataset_errors(tmp_path: Path) -> None:
    make_idx_dataset(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(12, 10, dtype=np.uint8))
    with pytest.raises(DataError, match=r"expected 0\.\.9"):
        load_idx_dataset("mnist", tmp_path, MNIST_CLASSES)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(11, dtype=np.uint8))
    with pytest.raises(DataError, match="11 labels for 12 images"):
        load_idx_dataset("mnist", tmp_path, MNIST_CLASSES)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte"):
        load_idx_dataset("mnist", tmp_path, MNIST_CLASSES)


def test_real_fashion_mnist() -> None:
    # `make test` puts it there first: Debian's package, or the official download into data/fashion_mnist.
    from clfops.data.sources import default_root

    source = load_idx_dataset("fashion_mnist", default_root("fashion_mnist"), FASHION_MNIST_CLASSES)
    assert source.train.x.shape == (60000, 1, 28, 28) and source.test.x.shape == (10000, 1, 28, 28)
    assert int(source.train.y.min()) == 0 and int(source.train.y.max()) == 9
    assert torch.bincount(source.test.y).tolist() == [1000] * 10  # the official test set is balanced


# ---------------------------------------------------------------- CIFAR-10


def cifar_records(n: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    labels = RNG.integers(0, 10, n, dtype=np.uint8)
    images = RNG.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    records = np.concatenate([labels[:, None], images.reshape(n, -1)], axis=1)
    return records.tobytes(), labels, images


def make_cifar(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    folder.mkdir(parents=True)
    train_x, train_y = [], []
    for i in range(1, 6):
        data, labels, images = cifar_records(3)
        (folder / f"data_batch_{i}.bin").write_bytes(data)
        train_x.append(images)
        train_y.append(labels)
    data, test_y, test_x = cifar_records(4)
    (folder / "test_batch.bin").write_bytes(data)
    (folder / "batches.meta.txt").write_text("\n".join(CIFAR10_CLASSES) + "\n\n")
    return np.concatenate(train_x), np.concatenate(train_y), test_x, test_y


def assert_cifar_matches(source, expected) -> None:
    train_x, train_y, test_x, test_y = expected
    assert source.train.x.shape == (15, 3, 32, 32) and source.test.x.shape == (4, 3, 32, 32)
    assert source.train.x.dtype == torch.uint8 and source.train.y.dtype == torch.int64
    assert np.array_equal(source.train.x.numpy(), train_x) and np.array_equal(source.train.y.numpy(), train_y)
    assert np.array_equal(source.test.x.numpy(), test_x) and np.array_equal(source.test.y.numpy(), test_y)
    assert source.classes == CIFAR10_CLASSES


def test_cifar_round_trip_parent_and_folder(tmp_path: Path) -> None:
    expected = make_cifar(tmp_path / BATCHES_DIR)
    assert_cifar_matches(load_cifar10(tmp_path), expected)
    assert_cifar_matches(load_cifar10(tmp_path / BATCHES_DIR), expected)


def test_cifar_from_archive(tmp_path: Path) -> None:
    expected = make_cifar(tmp_path / "src" / BATCHES_DIR)
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(root / "cifar-10-binary.tar.gz", "w:gz") as archive:
        archive.add(tmp_path / "src" / BATCHES_DIR, arcname=BATCHES_DIR)
    assert_cifar_matches(load_cifar10(root), expected)
    assert (root / BATCHES_DIR / "test_batch.bin").is_file()
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []  # staging folder removed


def _tar_with(root: Path, member: tarfile.TarInfo, payload: bytes = b"") -> None:
    with tarfile.open(root / "cifar-10-binary.tar.gz", "w:gz") as archive:
        archive.addfile(member, io.BytesIO(payload) if member.isfile() else None)


def test_cifar_archive_path_traversal_rejected(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    member = tarfile.TarInfo(f"{BATCHES_DIR}/../../evil.txt")
    member.size = 4
    _tar_with(root, member, b"evil")
    with pytest.raises(DataError, match="unsafe path"):
        load_cifar10(root)
    assert not (tmp_path / "evil.txt").exists()


def test_cifar_archive_symlink_rejected(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    member = tarfile.TarInfo(f"{BATCHES_DIR}/test_batch.bin")
    member.type, member.linkname = tarfile.SYMTYPE, "/etc/passwd"
    _tar_with(root, member)
    with pytest.raises(DataError, match="link"):
        load_cifar10(root)


def test_cifar_truncated_batch(tmp_path: Path) -> None:
    make_cifar(tmp_path / BATCHES_DIR)
    path = tmp_path / BATCHES_DIR / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="not a multiple of the 3073-byte record") as info:
        load_cifar10(tmp_path)
    assert str(path) in str(info.value)


def test_cifar_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no CIFAR-10 binary files"):
        load_cifar10(tmp_path)


# ---------------------------------------------------------------- image folder


def save(image: Image.Image, path: Path, **params: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **params)
    return path


def gray_pixels(value: int, size: tuple[int, int] = (6, 5)) -> np.ndarray:
    """(H, W) uint8 with a gradient, so resizing or channel mix-ups show up."""
    height, width = size
    return ((np.arange(height * width).reshape(height, width) * 7 + value) % 256).astype(np.uint8)


def make_gray_folder(root: Path, per_class: int = 5) -> dict[Path, np.ndarray]:
    written = {}
    for class_name in ("cat", "dog"):
        for i in range(per_class):
            pixels = gray_pixels(i * 31 + len(class_name) * (class_name == "dog"))
            written[save(Image.fromarray(pixels), root / class_name / f"{i:02d}.png")] = pixels
    return written


def test_folder_gray_round_trip_and_carved_split(tmp_path: Path) -> None:
    written = make_gray_folder(tmp_path / "ds")
    source = read_folder(tmp_path / "ds").source
    assert source.classes == ["cat", "dog"] and source.channels == 1 and source.size == (6, 5)
    assert len(source.train) == 8 and len(source.test) == 2  # 20 % of 5 per class
    assert source.train.x.dtype == torch.uint8 and source.train.y.dtype == torch.int64
    assert sorted(source.test.y.tolist()) == [0, 1]
    expected = {arr.tobytes() for arr in written.values()}
    decoded = {img[0].numpy().tobytes() for img in torch.cat([source.train.x, source.test.x])}
    assert decoded == expected
    again = read_folder(tmp_path / "ds", cache_dir=tmp_path / "other-cache").source
    assert torch.equal(again.test.x, source.test.x) and again.sha256 == source.sha256  # deterministic


def test_folder_modes(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    save(Image.fromarray(gray_pixels(3)), root / "a" / "gray.png")
    rgb = np.stack([gray_pixels(1), gray_pixels(50), gray_pixels(90)], axis=-1)
    save(Image.fromarray(rgb), root / "a" / "rgb.png")
    rgba = np.zeros((6, 5, 4), dtype=np.uint8)
    rgba[..., :3], rgba[0, 0] = (10, 20, 30), (10, 20, 30, 255)  # one opaque pixel, rest transparent
    save(Image.fromarray(rgba), root / "b" / "rgba.png")
    palette = Image.new("P", (5, 6))
    palette.putdata(np.tile([0, 1, 2], 10).tolist())  # every row starts with indices 0, 1, 2
    palette.putpalette([200, 0, 0, 0, 200, 0, 0, 0, 200])
    save(palette, root / "b" / "palette.png", transparency=2)  # index 2 transparent -> white
    sixteen = np.array([[0, 65535, 32896, 257, 1000]] * 6, dtype=np.uint16)
    save(Image.fromarray(sixteen), root / "c" / "sixteen.png")
    save(Image.fromarray(np.full((6, 5, 2), (0, 0), dtype=np.uint8)), root / "c" / "la.png")
    save(Image.new("CMYK", (5, 6), (0, 255, 255, 0)), root / "c" / "cmyk.jpg", quality=100)

    source = read_folder(root, test_fraction=0.0).source
    assert source.channels == 3 and len(source.test) == 0
    images = {
        name: source.train.x[i].permute(1, 2, 0).numpy()
        for i, name in enumerate(["gray", "rgb", "palette", "rgba", "cmyk", "la", "sixteen"])
    }
    assert np.array_equal(images["gray"], np.repeat(gray_pixels(3)[..., None], 3, axis=-1))
    assert np.array_equal(images["rgb"], rgb)
    assert images["rgba"][0, 0].tolist() == [10, 20, 30] and images["rgba"][1, 1].tolist() == [255] * 3
    assert images["palette"][0, 0].tolist() == [200, 0, 0] and images["palette"][0, 2].tolist() == [255] * 3
    assert images["sixteen"][0, :, 0].tolist() == [0, 255, 128, 1, 4]
    assert images["la"].min() == 255  # fully transparent gray -> white
    assert images["cmyk"][0, 0, 0] > 200 and images["cmyk"][0, 0, 1:].max() < 60  # C=0,M=Y=255 -> red


def test_folder_gray_detection_and_explicit_params(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    save(Image.fromarray(np.array([[0, 65535]] * 3, dtype=np.uint16)), root / "a" / "x.png")
    save(Image.fromarray(np.full((3, 2, 2), 255, dtype=np.uint8)), root / "a" / "y.png")
    save(Image.fromarray(gray_pixels(0, (9, 9))), root / "b" / "z.png")
    save(Image.fromarray(gray_pixels(0, (3, 2))), root / "b" / "w.png")
    source = read_folder(root, test_fraction=0.0).source
    assert source.channels == 1 and source.size == (3, 2)  # all grayscale; most common size wins
    assert source.train.x.shape == (4, 1, 3, 2)  # the 9x9 image was resized
    rgb = read_folder(root, channels=3, size=(4, 7), test_fraction=0.0).source
    assert rgb.train.x.shape == (4, 3, 4, 7)


def test_folder_train_test_layout(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_gray_folder(root / "train", per_class=3)
    save(Image.fromarray(gray_pixels(9)), root / "test" / "dog" / "t.png")
    source = read_folder(root).source
    assert source.classes == ["cat", "dog"] and len(source.train) == 6 and source.test.y.tolist() == [1]
    save(Image.fromarray(gray_pixels(9)), root / "test" / "cow" / "t.png")
    with pytest.raises(DataError, match="'cow' is in test/ but not in train/"):
        read_folder(root)


def test_folder_corrupt_image_names_its_path(tmp_path: Path) -> None:
    make_gray_folder(tmp_path / "ds")
    garbage = tmp_path / "ds" / "cat" / "broken.png"
    garbage.write_bytes(b"this is not a png at all" * 10)
    with pytest.raises(DataError) as info:
        read_folder(tmp_path / "ds")
    assert str(garbage) in str(info.value) and "\n" not in str(info.value)


def test_folder_truncated_image(tmp_path: Path) -> None:
    make_gray_folder(tmp_path / "ds")
    path = save(Image.fromarray(RNG.integers(0, 256, (64, 64), dtype=np.uint8)), tmp_path / "ds" / "dog" / "t.png")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="unreadable image") as info:
        read_folder(tmp_path / "ds")
    assert str(path) in str(info.value)


def test_folder_cache_hit_then_invalidated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "ds"
    written = make_gray_folder(root)
    first = read_folder(root)
    assert not first.cache_hit
    cache_files = sorted(p.suffix for p in (root / ".clfops-cache").iterdir())
    assert cache_files == [".json", ".safetensors"]

    def no_decode(*_args: object) -> np.ndarray:
        raise AssertionError("decoded although the cache should have been used")

    with monkeypatch.context() as patch:
        patch.setattr(folder_module, "_decode", no_decode)
        second = read_folder(root)
    assert second.cache_hit and second.source.classes == ["cat", "dog"]
    assert torch.equal(second.source.train.x, first.source.train.x) and second.source.sha256 == first.source.sha256

    changed = next(iter(written))
    before = changed.stat().st_mtime_ns
    save(Image.fromarray(255 - written[changed]), changed)
    os.utime(changed, ns=(before + 10**9, before + 10**9))
    third = read_folder(root)
    assert not third.cache_hit and third.source.sha256 != first.source.sha256
    all_x = torch.cat([third.source.train.x, third.source.test.x])
    assert any(np.array_equal(img[0].numpy(), 255 - written[changed]) for img in all_x)
    assert len(list((root / ".clfops-cache").glob("*.safetensors"))) == 1  # stale entry pruned


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="image folder not found"):
        read_folder(tmp_path / "absent")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        read_folder(tmp_path / "empty")
    make_gray_folder(tmp_path / "ds")
    with pytest.raises(DataError, match="channels must be"):
        read_folder(tmp_path / "ds", channels=2)
