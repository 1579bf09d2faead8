"""`data=stream`: image shards on local disk or S3 that never have to fit in memory, read with litdata.

`clfops data pack SRC DEST` writes litdata chunks (`DEST/{train,val,test}/chunk-*.bin` + litdata's
`index.json`) of `(uint8 (C, H, W) array, int label)` items and `DEST/clfops.json` (class names, shape,
counts, normalisation, content hash), last, as the commit marker. Training streams `train` and `val`
through `StreamingDataLoader` in the main process (workers would fight the model for 2 cores); batches
are the same uint8 (B, C, H, W) + int64 labels as the in-memory path, so the module does not know the
difference. The test split is small and is loaded into memory for `clfops evaluate`'s code.

Validation shards are cut at pack time with `make_splits` (same seed and fraction, same images as an
in-memory run), so validation never reads the training stream and a run needs no second pass over it.
Training items are written in a seeded random order: litdata reads chunk by chunk, so a class-sorted
image folder would otherwise give single-class batches.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from litdata import StreamingDataLoader, StreamingDataset

from clfops.data import DataError, Source, Split
from clfops.data.loader import Splits, make_splits

INDEX = "clfops.json"
SPLIT_NAMES = ("train", "val", "test")
PREVIEW = 16  # images of each streamed split kept in memory: model shapes, augment_preview.png
NAMED = ("fashion_mnist", "mnist", "cifar10")


@dataclass(frozen=True)
class S3Options:
    """Where S3 is: endpoint (SeaweedFS/MinIO/AWS) and region. Keys come from boto3's usual env/files."""

    endpoint_url: str | None
    region: str

    @classmethod
    def from_env(cls, endpoint_url: str | None = None, region: str | None = None) -> S3Options:
        endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("MLFLOW_S3_ENDPOINT_URL")
        return cls(endpoint or None, region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")

    def storage_options(self) -> dict[str, Any]:
        """boto3.client keyword arguments, the form litdata's `storage_options` takes."""
        options: dict[str, Any] = {"region_name": self.region}
        if self.endpoint_url:
            options["endpoint_url"] = self.endpoint_url
        return options

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", **self.storage_options())


@dataclass(frozen=True)
class StreamIndex:
    """DEST/clfops.json: what a run needs before reading one image."""

    name: str
    classes: list[str]
    channels: int
    size: list[int]  # [H, W]
    counts: dict[str, int]  # images per split
    sha256: str  # the source's content hash (Source.sha256): the same as an in-memory run of that data
    mean: list[float]  # per channel, pixels in [0, 1], measured on the train split at pack time
    std: list[float]
    val_fraction: float
    seed: int


@dataclass(frozen=True)
class StreamSplit(Split):
    """A split that lives in shards: `x`/`y` hold only its first images (a preview); len() is the full count."""

    count: int = 0

    def __len__(self) -> int:
        return self.count


def _location(dest: str) -> tuple[str, str] | None:
    """("bucket", "prefix") for s3://bucket/prefix, None for a local path; other schemes are refused."""
    if dest.startswith("s3://"):
        bucket, _, prefix = dest[5:].partition("/")
        if not bucket:
            raise DataError(f"{dest!r}: no bucket; use s3://BUCKET/PREFIX")
        return bucket, prefix.strip("/")
    if "://" in dest:
        raise DataError(f"{dest!r}: only a local folder or s3://bucket/prefix is supported")
    return None


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts]) if root.startswith("s3://") else str(Path(root, *parts))


# ---------------------------------------------------------------- packing


def resolve_source(src: str) -> Source:
    """SRC of `clfops data pack`: a data set name (downloaded when missing) or an image folder."""
    from clfops.data.sources import load_source

    if src in NAMED:
        return load_source(src, None)
    if Path(src).is_dir():
        return load_source("folder", src)
    raise DataError(f"{src!r}: not a data set ({', '.join(NAMED)}) nor an image folder")


def pack(
    src: str, dest: str, val_fraction: float, seed: int, chunk_bytes: str, s3: S3Options, name: str | None
) -> StreamIndex:
    """Write SRC as train/val/test shards + clfops.json to a local folder or s3://bucket/prefix.

    DEST is checked first (a mistyped one should not cost decoding SRC); SRC is read into memory once
    (the existing readers), so pack needs the memory that training from the shards does not."""
    where = _location(dest)
    _check_empty(dest, where, s3)
    source = resolve_source(src)
    splits = make_splits(source, val_fraction, seed, None)
    order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(seed))
    train = Split(splits.train.x[order], splits.train.y[order])
    mean, std = _mean_std(train.x)
    index = StreamIndex(
        name=name or source.name,
        classes=list(source.classes),
        channels=source.channels,
        size=list(source.size),
        counts={"train": len(train), "val": len(splits.val), "test": len(splits.test)},
        sha256=source.sha256,
        mean=mean,
        std=std,
        val_fraction=float(val_fraction),
        seed=int(seed),
    )
    with tempfile.TemporaryDirectory(prefix="clfops-pack-") as tmp:
        local = Path(tmp) if where else Path(dest)
        for split_name, split in zip(SPLIT_NAMES, (train, splits.val, splits.test), strict=True):
            _write_chunks(split, local / split_name, chunk_bytes)
        if where:
            _upload(local, where, s3)
        _write_index(index, dest, where, s3)
    return index


def _check_empty(dest: str, where: tuple[str, str] | None, s3: S3Options) -> None:
    """Refuse a DEST that holds files: stale chunks next to new ones would be read as data."""
    if where is None:
        path = Path(dest)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise DataError(f"{dest}: exists and is not an empty folder; pick a new DEST")
        return
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = where
    try:
        listed = s3.client().list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/" if prefix else "", MaxKeys=1)
    except (ClientError, BotoCoreError) as err:
        raise DataError(f"{dest}: cannot list it on S3 ({_first_line(err)})") from None
    if listed.get("KeyCount", 0):
        raise DataError(f"{dest}: already holds objects; pick a new prefix")


def _mean_std(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean/std of [0, 1] pixels, summed in float64 blocks (no float copy of the whole set)."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for block in x.split(4096):
        v = block.to(torch.float64) / 255.0
        total += v.sum(dim=(0, 2, 3))
        squares += (v * v).sum(dim=(0, 2, 3))
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / n
    std = (squares / n - mean * mean).clamp_min(1e-6).sqrt()
    return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]


def _write_chunks(split: Split, folder: Path, chunk_bytes: str) -> None:
    from litdata.streaming.writer import BinaryWriter

    writer = BinaryWriter(str(folder), chunk_bytes=chunk_bytes)
    images, labels = split.x.numpy(), split.y.tolist()
    for i, label in enumerate(labels):
        writer[i] = (images[i], int(label))  # ~150 µs per item: Fashion-MNIST's 70k in ~10 s
    writer.done()
    writer.merge()  # litdata's index.json for this split


def _upload(local: Path, where: tuple[str, str], s3: S3Options) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = where
    client = s3.client()
    try:
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            key = "/".join(filter(None, [prefix, path.relative_to(local).as_posix()]))
            client.upload_file(str(path), bucket, key)
    except (ClientError, BotoCoreError) as err:
        raise DataError(f"s3://{bucket}/{prefix}: upload failed ({_first_line(err)})") from None


def _write_index(index: StreamIndex, dest: str, where: tuple[str, str] | None, s3: S3Options) -> None:
    text = json.dumps(asdict(index), indent=2) + "\n"
    if where is None:
        from clfops.checkpoint import atomic_write_text

        atomic_write_text(Path(dest) / INDEX, text)
    else:
        bucket, prefix = where
        s3.client().put_object(Bucket=bucket, Key="/".join(filter(None, [prefix, INDEX])), Body=text.encode())


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


# ---------------------------------------------------------------- reading


def read_index(root: str, s3: S3Options) -> StreamIndex:
    where = _location(root)
    try:
        if where is None:
            text = Path(root, INDEX).read_text()
        else:
            bucket, prefix = where
            key = "/".join(filter(None, [prefix, INDEX]))
            text = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    except Exception as err:  # missing file/object, no bucket, no credentials: all "not packed data here"
        hint = "make it with clfops data pack"
        raise DataError(f"data.root={root}: no {INDEX} there ({_first_line(err)}); {hint}") from None
    return StreamIndex(**json.loads(text))


@dataclass(frozen=True)
class StreamSettings:
    """configs/data/stream.yaml, typed."""

    root: str
    s3: S3Options
    cache_dir: str
    max_cache_size: str
    batch_size: int
    eval_batch_size: int
    test_limit: int | None
    shuffle_window: int  # 0 = full

    @classmethod
    def from_config(cls, data: Mapping[str, Any]) -> StreamSettings:
        if data["train_limit"] is not None:
            raise DataError("data.train_limit: not supported with data=stream (pack fewer images instead)")
        if data["channels"] is not None or data["size"] is not None:
            raise DataError("data.channels/data.size: fixed when the shards were packed; leave them null")
        return cls(
            root=str(data["root"]),
            s3=S3Options.from_env(data["s3"]["endpoint_url"], data["s3"]["region"]),
            cache_dir=str(Path(data["cache_dir"]).resolve()),
            max_cache_size=str(data["max_cache_size"]),
            batch_size=int(data["batch_size"]),
            eval_batch_size=int(data["eval_batch_size"]),
            test_limit=None if data["test_limit"] is None else int(data["test_limit"]),
            shuffle_window=_window(int(data["shuffle_window"])),
        )


def _window(value: int) -> int:
    if value < 0:
        raise DataError(f"data.shuffle_window={value}: 0 (a full in-chunk shuffle) or a number of images > 0")
    return value


def _dataset(settings: StreamSettings, split: str, shuffle: bool, seed: int = 0) -> StreamingDataset:
    _allow_http_endpoint(settings.s3)
    root = settings.root if settings.root.startswith("s3://") else str(Path(settings.root).resolve())
    return StreamingDataset(
        _join(root, split),
        cache_dir=settings.cache_dir if root.startswith("s3://") else None,
        max_cache_size=settings.max_cache_size,
        shuffle=shuffle,
        seed=seed,
        storage_options=settings.s3.storage_options(),
        # 0: a new in-chunk permutation each epoch, items decoded one by one (~4k img/s on 2 cores); N: blocks
        # of N items are shuffled as units and decoded together (~15k img/s) but keep their images together.
        item_shuffle_window=settings.shuffle_window if shuffle else None,
        batch_decode=False if settings.shuffle_window == 0 else "auto",  # litdata's window read is O(chunk)
    )


def _allow_http_endpoint(s3: S3Options) -> None:
    """litdata 0.2.76 downloads chunks with obstore, whose client options lack `allow_http`: an http://
    endpoint (SeaweedFS/MinIO on loopback) fails with 'builder error' (obstore issue #159). Allow it."""
    if s3.endpoint_url and s3.endpoint_url.startswith("http://"):
        from litdata.streaming import downloader

        downloader._OBSTORE_CLIENT_OPTIONS["allow_http"] = "true"


def open_stream(data: Mapping[str, Any]) -> tuple[Source, Splits]:
    """The run's Source + Splits for data=stream: train/val are StreamSplit previews, test is in memory.

    Fills data.mean/data.std from the index when they are null (measured on the train split at pack time)."""
    settings = StreamSettings.from_config(data)
    index = read_index(settings.root, settings.s3)
    if data["mean"] is None or data["std"] is None:
        data["mean"], data["std"] = list(index.mean), list(index.std)  # type: ignore[index]
    test = _load_split(_dataset(settings, "test", False), settings.eval_batch_size, settings.test_limit)
    previews = {}
    for name in ("train", "val"):
        dataset = _dataset(settings, name, False)
        head = _load_split(dataset, PREVIEW, PREVIEW)
        previews[name] = StreamSplit(head.x, head.y, count=index.counts[name])
    source = Source(index.name, previews["train"], test, list(index.classes), index.sha256)
    return source, Splits(train=previews["train"], val=previews["val"], test=test)


def _load_split(dataset: StreamingDataset, batch_size: int, limit: int | None) -> Split:
    xs, ys, n = [], [], 0
    for x, y in StreamingDataLoader(dataset, batch_size=batch_size):
        xs.append(x)
        ys.append(y)
        n += len(y)
        if limit is not None and n >= limit:
            break
    x, y = torch.cat(xs), torch.cat(ys)
    return Split(x[:limit].contiguous(), y[:limit].contiguous())


def stream_loaders(data: Mapping[str, Any], seed: int) -> tuple[StreamLoader, StreamingDataLoader]:
    """(train, val) loaders over the shards; litdata splits them across DDP ranks itself."""
    settings = StreamSettings.from_config(data)
    train_set = _dataset(settings, "train", True, seed)
    # drop_last when that loses < 1 batch of a multi-batch epoch (as the in-memory loader does)
    train = StreamLoader(train_set, batch_size=settings.batch_size, drop_last=len(train_set) > settings.batch_size)
    val = StreamingDataLoader(_dataset(settings, "val", False), batch_size=settings.eval_batch_size)
    return train, val


class StreamLoader(StreamingDataLoader):
    """litdata's loader, whose checkpointed state counts the batches the model trained on.

    Lightning saves `state_dict()` in checkpoints and calls `load_state_dict` on resume (a "stateful"
    loader); litdata then continues the same shuffled epoch at the next item. Lightning fetches one batch
    ahead, so on a mid-epoch stop GracefulStop tells us how many batches were really consumed."""

    _consumed: int | None = None

    def __iter__(self) -> Iterator[Any]:
        self._consumed = None
        yield from super().__iter__()

    def mark_consumed(self, batches: int) -> None:
        self._consumed = batches

    def sync_epoch(self, epoch: int) -> None:
        """Lightning's epoch (0-based) before the epoch's iteration: litdata counts epochs itself (its
        __iter__ adds 1, then shuffles by that count), and Lightning restores a loader's state only for a
        mid-epoch resume, so after an epoch-end resume litdata would start counting again and replay epoch 1."""
        if not self.restore:
            self.current_epoch = epoch

    def load_state_dict(self, obj: dict[str, Any]) -> None:
        super().load_state_dict(obj)
        # litdata reads "fewer samples yielded than the data set holds" as mid-epoch, but with drop_last an
        # epoch-end checkpoint is exactly that (the ragged tail was never yielded): when every batch of the
        # epoch was trained on, start the next epoch fresh, as the uninterrupted run does.
        if self.restore and self._num_samples_yielded_streaming >= len(self) * self.batch_size:
            self.restore = False

    def state_dict(self) -> dict[str, Any]:
        if self._consumed is None:
            return super().state_dict()
        yielded = self._num_samples_yielded_streaming
        self._num_samples_yielded_streaming = self._consumed * self.batch_size
        try:
            return super().state_dict()
        finally:
            self._num_samples_yielded_streaming = yielded


class StreamEpoch(L.Callback):
    """Gives the streaming train loader Lightning's epoch at each epoch start (see StreamLoader.sync_epoch)."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loader = trainer.train_dataloader
        if isinstance(loader, StreamLoader):
            loader.sync_epoch(trainer.current_epoch)
