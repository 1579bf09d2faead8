"""What a person sees while training: Lightning's rich bar on a terminal, plain lines elsewhere (CI, logs)."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

log = logging.getLogger("clfops")


class PlainProgress(L.Callback):
    """One line about every `every_s` seconds during an epoch, one line per finished epoch."""

    def __init__(self, every_s: float = 15.0) -> None:
        self.every_s = every_s
        self._t0 = self._last = 0.0
        self._images = 0
        self._finished = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._print_epoch(trainer)
        self._t0 = self._last = time.perf_counter()
        self._images = 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._images += len(batch[1])
        now = time.perf_counter()
        if now - self._last < self.every_s:
            return
        self._last = now
        done, total = batch_idx + 1, trainer.num_training_batches
        rate = self._images / (now - self._t0)
        eta = (total - done) * (now - self._t0) / done
        loss = float(outputs["loss"]) if isinstance(outputs, dict) else float("nan")
        log.info(f"epoch {trainer.current_epoch + 1} {done}/{total} loss {loss:.4f} {rate:,.0f} img/s eta {eta:.0f}s")

    # Callback hooks run before the LightningModule's own on_train_epoch_end, which logs train/acc:
    # the epoch's line is printed at the next epoch's start (or at the end of training) to include it.
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finished = trainer.current_epoch + 1

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._print_epoch(trainer)

    def _print_epoch(self, trainer: L.Trainer) -> None:
        if not self._finished:
            return
        m = trainer.callback_metrics
        parts = [f"epoch {self._finished}/{trainer.max_epochs}"]
        for key in ("train/loss", "train/acc", "val/loss", "val/acc"):
            if key in m:
                parts.append(f"{key} {float(m[key]):.4f}")
        if "epoch_seconds" in m:
            parts.append(f"{float(m['epoch_seconds']):.1f}s")
        log.info("  ".join(parts))
        self._finished = 0


def quiet_libraries() -> None:
    """Keep Lightning's banners (GPU available…, tips), MLflow's INFO chatter and known-harmless warnings off
    the user's screen; clfops prints what matters itself."""
    import warnings

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # MLflow sets its loggers' level from this when it is first imported (later than this, in a run): INFO
    # unless told otherwise, e.g. "Validating input example against model signature" at every model log.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for pattern in (
        ".*LeafSpec.*",
        ".*smaller than the logging interval.*",
        ".*does not have many workers.*",
        # DDP: our epoch values are gathered by torchmetrics already, or are rank 0's own clock (lr, seconds).
        ".*when logging on epoch level in distributed setting.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)


def progress_callbacks(mode: str) -> tuple[list[L.Callback], bool]:
    """(callbacks, enable_progress_bar) for `logging.progress` = auto | rich | tqdm | plain | none."""
    if mode == "auto":
        mode = "rich" if sys.stderr.isatty() else "plain"
    if mode == "rich":
        return [RichProgressBar(), PlainProgress(every_s=float("inf"))], True
    if mode == "tqdm":
        return [TQDMProgressBar()], True
    if mode == "plain":
        return [PlainProgress()], False
    return [], False
