"""The training bar on a terminal (`logging.progress=rich`, or `auto` on a tty):

    epoch 2/3 ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━ 210/421  1,834 img/s  loss 0.4312  epoch 0:03<0:03  run 0:10<0:09

with each finished epoch's line (progress.epoch_line) printed above it, a short `validate` bar under it while
validation runs, and a `test` bar while the best weights are scored (`stage_bar`).

Hand-written on rich.progress rather than a subclass of Lightning's RichProgressBar, because that bar counts
epochs from 0 (`Epoch 1/2` on the second of three), shows batches/s and Lightning's `v_num`, resets to
`0/421 0.00it/s` when an epoch ends, and clfops' epoch line (a logging record on stderr) lands on the bar's own
line. Fixing those meant overriding most of its ~600 lines; this draws exactly what clfops wants in ~150.
The bar is redrawn at most every 0.1 s: reading the loss on a GPU waits for the step, so not on every batch.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

import lightning as L
from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

log = logging.getLogger("clfops")
REDRAW_S = 0.1


def _clock(seconds: float) -> str:
    s = max(int(seconds), 0)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def epoch_line(trainer: L.Trainer, epoch: int) -> str:
    """`epoch 2/3  train/loss 0.41  train/acc 0.85  val/loss 0.44  val/acc 0.84  1,812 img/s  3.1s`."""
    m = trainer.callback_metrics
    parts = [f"epoch {epoch}/{trainer.max_epochs}"]
    for key in ("train/loss", "train/acc", "val/loss", "val/acc"):
        if key in m:
            parts.append(f"{key} {float(m[key]):.4f}")
    if "throughput_img_s" in m:  # training images only (recorder.EpochStats), as on the bar
        parts.append(f"{float(m['throughput_img_s']):,.0f} img/s")
    if "epoch_seconds" in m:
        parts.append(f"{float(m['epoch_seconds']):.1f}s")
    return "  ".join(parts)


def _progress(pulse: bool = False) -> Progress:
    """Transient: when it stops, the terminal keeps the epoch lines, not a finished bar."""
    columns = [TextColumn("{task.description}"), BarColumn(bar_width=40)]
    columns += [TimeElapsedColumn()] if pulse else [MofNCompleteColumn(), TextColumn("{task.fields[info]}")]
    return Progress(*columns, console=Console(stderr=True, soft_wrap=True), transient=True, refresh_per_second=8)


@contextlib.contextmanager
def _live(progress: Progress) -> Iterator[Progress]:
    """Show `progress`; meanwhile clfops' log lines (a StreamHandler on stderr) go above it, not onto its line."""
    stderr = sys.stderr
    progress.start()  # rich swaps sys.stderr for a proxy that prints above the live bar
    handlers = [h for h in log.handlers if type(h) is logging.StreamHandler and h.stream is stderr]
    old = [h.setStream(sys.stderr) for h in handlers]
    try:
        yield progress
    finally:
        for h, stream in zip(handlers, old, strict=True):
            h.setStream(stream)
        progress.stop()


@contextlib.contextmanager
def stage_bar(mode: str, description: str) -> Iterator[None]:
    """A pulsing bar with the elapsed time while a stage without batches of its own runs (the final test)."""
    if not (mode == "rich" or (mode == "auto" and sys.stderr.isatty())):
        yield
        return
    with _live(_progress(pulse=True)) as progress:
        progress.add_task(description, total=None)
        progress.refresh()
        yield


class RunBar(ProgressBar):
    """Lightning's progress-bar slot (so it adds no bar of its own), drawn with rich; rank 0 only."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._stack: contextlib.ExitStack | None = None
        self._progress: Progress | None = None
        self._train: TaskID | None = None
        self._val: TaskID | None = None
        self._fit_t0 = self._epoch_t0 = self._val_t0 = self._drawn = 0.0
        self._images = self._val_images = 0
        self._epoch_seconds: list[float] = []  # finished epochs (train + validation): the run's ETA
        self._finished = 0  # an epoch whose line is due (printed once the module has logged train/acc)

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._enabled:
            return
        self._stack = contextlib.ExitStack()
        self._progress = self._stack.enter_context(_live(_progress()))
        self._fit_t0 = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._print_finished(trainer)
        self._epoch_t0 = time.perf_counter()
        self._images = 0
        self._drawn = 0.0  # the new epoch's first batch is drawn at once: the bar never shows `0/N`

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._progress is None:
            return
        self._images += len(batch[1])
        now = time.perf_counter()
        done, total = batch_idx + 1, int(trainer.num_training_batches)
        if now - self._drawn < REDRAW_S and done < total:
            return
        first, self._drawn = self._drawn == 0.0, now
        spent = now - self._epoch_t0
        epoch_left = spent / done * (total - done)  # from the batches this epoch (resumed ones excluded)
        per_epoch = sum(self._epoch_seconds) / len(self._epoch_seconds) if self._epoch_seconds else spent + epoch_left
        info = [f"{self._images / max(spent, 1e-9):,.0f} img/s"]
        if isinstance(outputs, dict) and "loss" in outputs:
            info.append(f"loss {float(outputs['loss']):.4f}")
        info.append(f"epoch {_clock(spent)}<{_clock(epoch_left)}")
        epoch, epochs = trainer.current_epoch + 1, trainer.max_epochs
        if epochs is not None and epochs > 0:
            run_left = epoch_left + (epochs - epoch) * per_epoch
            info.append(f"run {_clock(now - self._fit_t0)}<{_clock(run_left)}")
        description = f"epoch {epoch}/{epochs}" if epochs is not None and epochs > 0 else f"epoch {epoch}"
        fields = {"description": description, "total": total, "completed": done, "info": "  ".join(info)}
        if self._train is None:
            self._train = self._progress.add_task(**fields)
        else:
            self._progress.update(self._train, **fields)
        if first:  # the new epoch's first state is drawn at once, not at the next tick (1/8 s)
            self._progress.refresh()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_seconds.append(time.perf_counter() - self._epoch_t0)
        self._finished = trainer.current_epoch + 1

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_t0, self._val_images = time.perf_counter(), 0

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._progress is None or trainer.sanity_checking:
            return
        self._val_images += len(batch[1])
        spent = time.perf_counter() - self._val_t0
        info = f"{self._val_images / max(spent, 1e-9):,.0f} img/s  {_clock(spent)}"
        if self._val is None:  # added at its first batch, so it never shows 0/N
            total = int(sum(trainer.num_val_batches))
            self._val = self._progress.add_task("validate", total=total, completed=1, info=info)
            self._progress.refresh()  # shown even when validation takes less than a tick
        else:
            self._progress.update(self._val, advance=1, info=info)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._progress is not None and self._val is not None:
            self._progress.remove_task(self._val)
        self._val = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._print_finished(trainer)
        self._stop()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._stop()

    def _print_finished(self, trainer: L.Trainer) -> None:
        if self._finished:
            log.info(epoch_line(trainer, self._finished))  # above the bar (and into train.log)
            self._finished = 0

    def _stop(self) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack, self._progress, self._train, self._val = None, None, None, None
