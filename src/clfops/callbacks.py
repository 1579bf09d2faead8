"""The Lightning callbacks a run uses, built from config: checkpoints, early stopping, SWA."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, StochasticWeightAveraging
from omegaconf import DictConfig


def trainer_callbacks(cfg: DictConfig, run_dir: Path) -> tuple[list[L.Callback], ModelCheckpoint]:
    """(callbacks, the checkpoint callback that tracks `best`)."""
    ckdir = run_dir / "checkpoints"
    monitor, mode = cfg.checkpoint.monitor, cfg.checkpoint.mode
    # best-by-monitor + last (every epoch); a second callback keeps every N-th epoch.
    best = ModelCheckpoint(
        dirpath=ckdir,
        filename="best",
        monitor=monitor,
        mode=mode,
        save_top_k=1,
        save_last=True,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    callbacks: list[L.Callback] = [best]
    if cfg.checkpoint.every_n_epochs:
        callbacks.append(
            ModelCheckpoint(
                dirpath=ckdir,
                filename="epoch{epoch:03d}",
                every_n_epochs=cfg.checkpoint.every_n_epochs,
                save_top_k=-1,
                auto_insert_metric_name=False,
                enable_version_counter=False,
            )
        )
    es = cfg.trainer.early_stopping
    if es.enabled:
        callbacks.append(EarlyStopping(monitor=es.monitor, mode=es.mode, patience=es.patience))
    swa = cfg.trainer.swa
    if swa.enabled:
        callbacks.append(StochasticWeightAveraging(swa_lrs=swa.lr, swa_epoch_start=swa.epoch_start))
    return callbacks, best
