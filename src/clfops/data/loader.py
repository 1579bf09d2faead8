"""Train/validation split and the batch iterator over in-memory uint8 tensors.

`BatchLoader` replaces Dataset + DataLoader: indexing a (N, C, H, W) uint8 tensor with a batch of indices
is one gather (~0.1 ms for 256 Fashion-MNIST images), where a per-sample Dataset pays Python overhead
for each image and worker processes would fight the model for the machine's 2 cores.

The order of an epoch is a pure function of (seed, epoch, rank): a resumed run replays it exactly, and
DDP ranks take disjoint strided slices of the same permutation (DistributedSampler's semantics). Training pads
the permutation so every rank steps the same number of times (a rank with one batch fewer would leave the
others waiting in the gradient all-reduce); evaluation does not pad, so N-process metrics count every image
exactly once and equal the 1-process value.

On a GPU the split's tensors move to the device once (`on_device`) and every batch is gathered there: no
host-to-device copy per batch, and no pinned memory or loader workers to feed one (Fashion-MNIST's 60k training
images are 47 MB of uint8; CIFAR-10's 50k, 154 MB).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from clfops.data import DataError, Source, Split

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Splits:
    train: Split
    val: Split
    test: Split
    test_split: str = "test"  # "val" when the data has no test split and `test` is its validation split


def make_splits(
    source: Source, val_fraction: float, seed: int, train_limit: int | None, test_limit: int | None = None
) -> Splits:
    """Seeded, reproducible split of the official training set; the test set is never mixed in.
    `test_limit` keeps the first N test images (quick checks; the reported test numbers then cover only those)."""
    x, y = source.train.x, source.train.y
    if train_limit is not None:
        if train_limit < 2:
            raise DataError(f"data.train_limit={train_limit}: need at least 2 images")
        x, y = x[:train_limit], y[:train_limit]
    if source.val is not None:  # the data's own validation split (a folder's val/): data.val_fraction unused
        test = source.test if test_limit is None else Split(source.test.x[:test_limit], source.test.y[:test_limit])
        return Splits(train=Split(x, y), val=source.val, test=test, test_split=source.test_split)
    n = len(y)
    n_val = round(n * val_fraction)
    if not 0 <= val_fraction < 1 or (val_fraction > 0 and n_val == 0):
        raise DataError(f"data.val_fraction={val_fraction}: must be in [0, 1) and leave >= 1 validation image of {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    return Splits(
        train=Split(x[train_idx], y[train_idx]),
        val=Split(x[val_idx], y[val_idx]),
        test=source.test if test_limit is None else Split(source.test.x[:test_limit], source.test.y[:test_limit]),
        test_split=source.test_split,
    )


def on_device(split: Split, device: torch.device) -> Split:
    """`split` with its images and labels on `device`, copied once for the whole run (the same `split` on the CPU).

    A data set larger than half the device's free memory stays on the host, leaving the model its room: its
    batches are then copied per step by Lightning, as on any loader (one line says so)."""
    if split.x.device == device:
        return split
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        size = split.x.nbytes + split.y.nbytes
        if size > free // 2:
            logger.info(
                f"{size / 2**20:,.0f} MB of images exceed half of {device}'s free {free / 2**20:,.0f} MB: they stay "
                "in host memory and each batch is copied to the GPU"
            )
            return split
    return Split(split.x.to(device), split.y.to(device))


class EpochSampler:
    """Indices of one epoch for one rank. Lightning calls `set_epoch` before each training epoch."""

    def __init__(self, n: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1, pad: bool = True) -> None:
        self.n, self.shuffle, self.seed, self.pad = n, shuffle, seed, pad
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> torch.Tensor:
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=gen)
        else:
            order = torch.arange(self.n)
        if self.world_size == 1:
            return order
        if not self.pad:
            return order[self.rank :: self.world_size]
        # Pad by repeating the head so every rank gets the same number of batches (DistributedSampler).
        per_rank = math.ceil(self.n / self.world_size)
        padded = torch.cat([order, order[: per_rank * self.world_size - self.n]])
        return padded[self.rank :: self.world_size]

    def __len__(self) -> int:
        if not self.pad:
            return len(range(self.rank, self.n, self.world_size))
        return math.ceil(self.n / self.world_size)


class BatchLoader:
    """Yields (uint8 images, int64 labels) batches; `sampler` is what Lightning sets the epoch on."""

    def __init__(self, split: Split, batch_size: int, sampler: EpochSampler, drop_last: bool = False) -> None:
        if batch_size < 1:
            raise DataError(f"batch_size={batch_size}: must be >= 1")
        self.split, self.batch_size, self.sampler, self.drop_last = split, batch_size, sampler, drop_last
        self.batch_sampler = None  # Lightning inspects DataLoader-like attributes; batching is ours
        self._done = 0  # batches yielded in the current epoch (state for a mid-epoch checkpoint)
        self._skip = 0  # batches to skip once, after load_state_dict (mid-epoch resume)
        self._consumed: int | None = None
        self._skip_epoch = -1

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        idx = self.sampler.indices().to(self.split.x.device)  # the epoch's order where the data is: one copy
        start = self._skip if self.sampler.epoch == self._skip_epoch else 0
        self._skip = 0
        self._done, self._consumed = start, None
        for k in range(start, len(self)):
            j = idx[k * self.batch_size : (k + 1) * self.batch_size]
            self._done = k + 1
            yield self.split.x[j], self.split.y[j]

    # Lightning saves these in checkpoints ("stateful" loaders) so a mid-epoch resume continues the
    # same permutation at the next batch instead of restarting the epoch.
    def mark_consumed(self, batches: int) -> None:
        """Batches the model has actually trained on: Lightning prefetches one, so `_done` runs ahead."""
        self._consumed = batches

    def state_dict(self) -> dict[str, int]:
        done = self._consumed if self._consumed is not None else self._done
        return {"epoch": self.sampler.epoch, "batches_done": done, "world_size": self.sampler.world_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        # An epoch-end checkpoint (all batches done) resumes at the next epoch's first batch.
        done = int(state["batches_done"])
        saved_world = int(state.get("world_size", 1))
        if saved_world != self.sampler.world_size:  # resumed on another number of processes: same share of
            done = done * saved_world // self.sampler.world_size  # the epoch, counted in this world's batches
        self._skip = done if done < len(self) else 0
        self._skip_epoch = int(state["epoch"])


def train_loader(split: Split, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> BatchLoader:
    # drop_last only when it loses < 1 batch of a multi-batch epoch: a ragged last batch of 3 images
    # gives a noisy BatchNorm step; tiny data sets keep every image.
    drop = len(split) // world_size > batch_size
    return BatchLoader(split, batch_size, EpochSampler(len(split), True, seed, rank, world_size), drop_last=drop)


def eval_loader(split: Split, batch_size: int, rank: int = 0, world_size: int = 1) -> BatchLoader:
    return BatchLoader(split, batch_size, EpochSampler(len(split), False, 0, rank, world_size, pad=False))
