"""Where metrics go: one Lightning logger that writes metrics.csv, MLflow and (optionally) TensorBoard.

Same names everywhere (`train/loss`, `val/acc`, `lr`). metrics.csv is the run directory's own record: one
row per logging call (step, epoch + metric columns), rewritten atomically after each logging call so a crash
never leaves half a file (fsynced when the run ends), and truncated to the resumed step on resume so no epoch
appears twice.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only

from clfops.safe_files import atomic_write_text
from clfops.tracking import Tracker
from clfops.tracking.rundirs import read_metrics


class RunLogger(Logger):
    def __init__(
        self, run_dir: Path, tracker: Tracker | None, tensorboard: bool, resume_at: tuple[int, int] | None = None
    ) -> None:
        """`resume_at` = (epoch, global_step) of the checkpoint a resumed run starts from: later rows of
        metrics.csv are dropped (they will be produced again), and points MLflow already holds are not re-sent."""
        super().__init__()
        self.run_dir = run_dir
        self.tracker = tracker
        self.csv_path = run_dir / "metrics.csv"
        self.rows: list[dict[str, Any]] = []
        self._sent: dict[str, int] = {}
        if resume_at is not None:
            epoch, step = resume_at
            self.rows = [r for r in read_metrics(self.csv_path) if r["epoch"] <= epoch and r["step"] <= step]
            self._sent = tracker.last_steps() if tracker is not None else {}
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    @property
    def name(self) -> str:
        return "clfops"

    @property
    def version(self) -> str:
        return self.run_dir.name

    @property
    def save_dir(self) -> str:
        return str(self.run_dir)

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Params are logged once by train.py from the resolved config, not by Lightning."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        step = int(step or 0)
        values = {k: float(v) for k, v in metrics.items() if k != "epoch"}
        epoch = int(metrics.get("epoch", -1))
        last = self.rows[-1] if self.rows else None
        if last is not None and last["step"] == step and last["epoch"] == epoch:
            last.update(values)  # validation and train-epoch metrics of one epoch share a row
        else:
            self.rows.append({"step": step, "epoch": epoch, "time": round(time.time(), 3), **values})
        if self.tracker is not None:
            fresh = {k: v for k, v in values.items() if step > self._sent.get(k, -1)}
            self.tracker.log_metrics(fresh, step)
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(key, value, step)

    @rank_zero_only
    def save(self, durable: bool = False) -> None:
        """Rewrite metrics.csv. Lightning calls this after every logging step (8 times a default epoch): those
        rewrites are atomic but not fsynced; `finalize` (the end of every run, failed or killed too) is."""
        if not self.rows:
            return
        columns = ["step", "epoch", "time"]
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.csv_path, buf.getvalue(), durable)
        if self._tb is not None:
            self._tb.flush()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save(durable=True)
        if self.tracker is not None:
            self.tracker.flush()
        if self._tb is not None:
            self._tb.close()


class EpochStats(L.Callback):
    """Per epoch: `lr`, `epoch_seconds` (train + validation) and `throughput_img_s` (training only)."""

    def __init__(self) -> None:
        self._t0 = self._t_train = self._t_val = 0.0
        self._images = 0
        self.validation_seconds = 0.0  # all validation passes of this fit (summary.json `timings`)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()
        self._t_train = 0.0
        self._images = 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._images += len(batch[1])

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t_val = time.perf_counter()
        if not trainer.sanity_checking and self._t_train == 0.0:
            self._t_train = self._t_val - self._t0

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.validation_seconds += time.perf_counter() - self._t_val

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = time.perf_counter() - self._t0
        train_s = self._t_train or total
        # Rank 0's clock; throughput is the job's (every rank trains on as many images as rank 0).
        images = self._images * trainer.world_size
        pl_module.log("lr", trainer.optimizers[0].param_groups[0]["lr"], rank_zero_only=True)
        pl_module.log("epoch_seconds", total, rank_zero_only=True)
        pl_module.log("throughput_img_s", images / max(train_s, 1e-9), rank_zero_only=True)
