"""`clfops augment-preview`: the augmentation a config applies, as a PNG grid a person can judge."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from clfops.data.augment import Augment, preview_grid
from clfops.data.sources import load_source


def write_preview(cfg: DictConfig, out: str | Path, count: int) -> Path:
    from clfops.build import augment_config

    source = load_source(cfg.data.name, cfg.data.root, cfg.data.channels, cfg.data.size)
    gen = torch.Generator().manual_seed(int(cfg.seed))
    images = source.train.x[:count]
    mean = cfg.data.mean or [0.5] * source.channels
    std = cfg.data.std or [0.5] * source.channels
    return preview_grid(images, Augment(augment_config(cfg.augment)), gen, count, Path(out), mean, std)
