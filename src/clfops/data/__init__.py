"""Data sets as in-memory uint8 tensors.

Every reader returns `Split`s of `uint8` images shaped (N, C, H, W) and `int64` labels; nothing is
normalised or augmented here. That happens per batch in `loader.py` / `augment.py`, because a
per-sample Dataset + DataLoader costs ~14 % on this 2-core machine and workers fight the model for cores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clfops.errors import UserError


class DataError(UserError):
    """A user-facing data problem (missing file, corrupt image, wrong format): one line, no traceback."""


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # uint8 (N, C, H, W)
    y: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class Source:
    """What a reader returns: the official train and test splits, class names and a content hash."""

    name: str
    train: Split
    test: Split
    classes: list[str]
    sha256: str  # hash of the decoded tensors (images + labels of both splits)
    val: Split | None = None  # a validation split the data came with (folder val/); None: carved from train
    test_split: str = "test"  # where test metrics come from: "test", or "val" for data without a test split

    @property
    def channels(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.train.x.shape[2]), int(self.train.x.shape[3])
