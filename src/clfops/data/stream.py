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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from litdata import StreamingDataLoader, StreamingDataset
from litdata.utilities.env import _DistributedEnv

from clfops.data import DataError, Source, Split
from clfops.data.loader import Splits

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
    """clfops/configs/data/stream.yaml, typed."""

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


def _dataset(
    settings: StreamSettings, split: str, shuffle: bool, seed: int = 0, rank: int = 0, world: int = 1
) -> StreamingDataset:
    """One split's dataset, read as `rank` of `world` processes (the whole split by default).

    litdata detects the rank once, when the dataset is made, from torch.distributed (not started yet: Lightning
    starts it inside fit) or from WORLD_SIZE / GLOBAL_RANK, which torchrun half-sets (WORLD_SIZE, RANK): every
    rank would read rank 0's share, and a one-process read of the test split only half of it. So the rank is
    always given, and so is drop_last (litdata's default follows its detection): training ranks get equal
    shares (a rank with a batch more would wait in an all-reduce forever); evaluation is an exact partition.
    One "node" for litdata, whatever the layout: its node count only groups chunks for cache locality, and
    with it fixed, 2 nodes read exactly the images 2 processes on one node read."""
    _allow_http_endpoint(settings.s3)
    root = settings.root if settings.root.startswith("s3://") else str(Path(settings.root).resolve())
    dataset = StreamingDataset(
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
    dataset.distributed_env = _DistributedEnv(world_size=world, global_rank=rank, num_nodes=1)
    dataset.set_drop_last(shuffle and world > 1)  # shuffle: the train split (its loader may say more)
    return dataset


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


def stream_loaders(
    data: Mapping[str, Any], seed: int, rank: int = 0, world: int = 1
) -> tuple[StreamLoader, StreamingDataLoader]:
    """(train, val) loaders over the shards for DDP `rank` of `world`: litdata gives each rank its share."""
    settings = StreamSettings.from_config(data)
    train_set = _dataset(settings, "train", True, seed, rank, world)
    # drop_last when that loses < 1 batch of a multi-batch epoch (as the in-memory loader does)
    train = StreamLoader(train_set, batch_size=settings.batch_size, drop_last=len(train_set) > settings.batch_size)
    val = StreamingDataLoader(_dataset(settings, "val", False, 0, rank, world), batch_size=settings.eval_batch_size)
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
