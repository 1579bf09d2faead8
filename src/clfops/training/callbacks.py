"""The Lightning callbacks a run uses, built from config: checkpoints, early stopping, SWA."""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, StochasticWeightAveraging
from omegaconf import DictConfig, OmegaConf

from clfops.config import ConfigError
from clfops.safe_files import atomic_write_bytes, load_checkpoint
from clfops.tracking.redact import redact_obj


def trainer_callbacks(cfg: DictConfig, run_dir: Path) -> tuple[list[L.Callback], ModelCheckpoint]:
    """(callbacks, the checkpoint callback that tracks `best`)."""
    ckdir = run_dir / "checkpoints"
    monitor, mode = cfg.checkpoint.monitor, cfg.checkpoint.mode
    # best-by-monitor + last (every epoch); a second callback keeps every N-th epoch, the newest
    # `keep_periodic` of them: Lightning ranks them by the global step it always offers as a monitor.
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
                monitor="step",
                mode="max",
                # a checkpoint from before keep_periodic existed resumes keeping all, as it did
                save_top_k=int(OmegaConf.select(cfg, "checkpoint.keep_periodic", default=-1)),
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
    ema = ema_callback(cfg.trainer.ema, bool(swa.enabled))
    if ema is not None:
        callbacks.append(ema)
    return callbacks, best


def ema_callback(ema: DictConfig, swa_enabled: bool) -> L.Callback | None:
    """Lightning's EMAWeightAveraging from `trainer.ema`: validation, checkpoints (`state_dict`) and hence the
    tested and logged model use the averaged weights; the raw ones ride along as `current_model_state`."""
    if not ema.enabled:
        return None
    if swa_enabled:
        raise ConfigError("trainer.ema and trainer.swa both average weights: enable only one of them")
    if not 0.0 < float(ema.decay) < 1.0:
        raise ConfigError(f"trainer.ema.decay={ema.decay}: must be in (0, 1), e.g. 0.999")
    from lightning.pytorch.callbacks import EMAWeightAveraging

    return EMAWeightAveraging(decay=float(ema.decay), update_starting_at_step=int(ema.start_step))


class RunInterrupted(KeyboardInterrupt):
    """The run was stopped by a signal (Ctrl-C or SIGTERM); `signum` gives the exit code 128 + signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class GracefulStop(L.Callback):
    """SIGTERM / Ctrl-C during fit: stop at the next batch boundary, write `last.ckpt` there, end KILLED.

    Lightning already turns SIGTERM into a `SIGTERMException` raised after a batch has fully completed
    (optimizer and LR scheduler stepped, progress counted); Ctrl-C is forwarded to that same path. We save
    in `on_exception`, with the loader position, augmentation generator and the epoch's running sums, so
    `resume=` continues at the next batch. A second signal, or one outside fit, stops at once.
    """

    def __init__(self, last_path: Path) -> None:
        self.last_path = last_path
        self.requested: int | None = None
        self.in_fit = False
        self._forwarding = False
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self._forwarding and signum == signal.SIGTERM:  # our own forward of a Ctrl-C
            self._forwarding = False
            return
        if not self.in_fit or self.requested is not None:
            raise RunInterrupted(self.requested or signum)
        self.requested = signum
        if signum == signal.SIGINT:  # let Lightning's SIGTERM machinery stop at the batch boundary
            self._forwarding = True
            os.kill(os.getpid(), signal.SIGTERM)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.in_fit = True

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.in_fit = False

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.in_fit = False
        if self.requested is None or not isinstance(exception, SystemExit) or not trainer.training:
            return  # stopped in validation: the epoch's last.ckpt before it stays the resume point
        if trainer.world_size > 1:  # Lightning has already killed the other ranks: no collective save is
            return  # possible; the last epoch checkpoint is the resume point
        done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        loader = trainer.train_dataloader
        if hasattr(loader, "mark_consumed"):  # BatchLoader, stream.StreamLoader
            loader.mark_consumed(done)
        pl_module.saving_mid_epoch = True
        try:
            trainer.save_checkpoint(self.last_path, weights_only=False)
        finally:
            pl_module.saving_mid_epoch = False


class RunInfo(L.Callback):
    """Puts the resolved config, class names and data hash in every checkpoint: a resume needs them.
    The config is stored redacted (tracking.uri's password): a resume takes credentials from the environment
    or the tracking.uri given again (clfops.tracking.store.resolve_uri), never from a checkpoint."""

    def __init__(self, config: dict[str, Any], classes: list[str], data_sha256: str) -> None:
        self.info = {"config": redact_obj(config), "classes": list(classes), "data_sha256": data_sha256}

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint["clfops"] = self.info | {"world_size": trainer.world_size}


class AtomicCheckpointIO(CheckpointIO):
    """Lightning CheckpointIO: atomic save, weights_only load."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        buf = io.BytesIO()
        torch.save(checkpoint, buf)
        atomic_write_bytes(Path(path), buf.getvalue())

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return load_checkpoint(Path(path))

    def remove_checkpoint(self, path: Any) -> None:
        Path(path).unlink(missing_ok=True)
