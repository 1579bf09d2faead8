"""What `clfops lr-find` and `clfops batch-size-find` share: the real recipe, set up as `clfops train` sets it up.

Both run the composed config's data, network and Classifier (augmentation, normalisation, optimizer groups),
trained by a Lightning Trainer with the run's precision and threads; nothing is logged as a training run. The
LR range test is lr_find.py (Lightning's Tuner), the batch-size test batch_size_find.py (timed optimizer steps).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import lightning as L
from omegaconf import DictConfig

from clfops.data import Source
from clfops.data.loader import Splits, make_splits
from clfops.data.sources import load_source
from clfops.hardware import configure_cuda, configure_threads, resolve_precision
from clfops.training.callbacks import AtomicCheckpointIO
from clfops.training.progress import quiet_libraries


def prepare(cfg: DictConfig) -> tuple[Source, Splits, str]:
    """Threads, seed, data and precision exactly as `clfops train` sets them up."""
    quiet_libraries()
    configure_threads(cfg.trainer.num_threads)
    configure_cuda(cfg.trainer.accelerator, bool(cfg.deterministic))
    L.seed_everything(cfg.seed, workers=False, verbose=False)
    size = None if cfg.data.size is None else (int(cfg.data.size[0]), int(cfg.data.size[1]))
    source = load_source(cfg.data.name, cfg.data.root, cfg.data.channels, size)
    splits = make_splits(source, cfg.data.val_fraction, cfg.seed, cfg.data.train_limit)
    return source, splits, resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)


def bare_trainer(cfg: DictConfig, precision: str, work_dir: Path, max_epochs: int, callbacks: list) -> L.Trainer:
    """A Trainer with the run's hardware settings and nothing else: no logger, checkpoints or validation."""
    return L.Trainer(
        max_epochs=max_epochs,
        accelerator=cfg.trainer.accelerator,
        devices=1,
        precision=precision,
        logger=False,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        gradient_clip_val=cfg.trainer.gradient_clip_val,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(work_dir),
    )


@contextlib.contextmanager
def quiet_tuner() -> Iterator[None]:
    """No LR-finder tqdm bar off a terminal (CI logs), no Lightning notes about the missing validation loader
    or the finder's temporary checkpoint: the command prints its own result."""
    from lightning.pytorch.tuner import lr_finder

    bar = lr_finder.tqdm
    names = ("lightning.pytorch.trainer.connectors.checkpoint_connector", "lightning.pytorch.tuner.lr_finder")
    noisy = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in noisy]
    if not sys.stderr.isatty():  # the finder hard-codes its bar on; tqdm reads TQDM_DISABLE only at import
        lr_finder.tqdm = functools.partial(bar, disable=True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")
            for lg in noisy:
                lg.setLevel(logging.WARNING)
            yield
    finally:
        for lg, level in zip(noisy, levels, strict=True):
            lg.setLevel(level)
        lr_finder.tqdm = bar
