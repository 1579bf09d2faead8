"""`clfops batch-size-find`: img/s of real optimizer steps per batch size on this machine, and the pick.

Each size trains the recipe as finders.py sets it up for `warmup` + `steps` batches; the steps after the warm-up
are timed. The recommendation is the smallest size within 5% of the fastest (more optimizer steps per epoch
for the same speed).
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from clfops.data import Source, Split
from clfops.data.loader import BatchLoader, EpochSampler, Splits, on_device
from clfops.hardware import cuda_in_use, resolve_precision
from clfops.safe_files import atomic_write_text
from clfops.tuning import TuningError
from clfops.tuning.finders import bare_trainer, prepare, quiet_tuner


@dataclass
class BatchRow:
    batch_size: int
    status: str  # ok | oom | error
    img_s: float | None = None
    step_ms: float | None = None
    note: str = ""


class _StepTimer(L.Callback):
    """Wall time of the steps after `warmup` (first steps pay allocation and kernel selection)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.t0 = self.t1 = 0.0

    def _sync(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        if idx == self.warmup:
            self._sync()
            self.t0 = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        self._sync()
        self.t1 = time.perf_counter()


def _measure(cfg: DictConfig, source: Source, splits: Splits, precision: str, size: int, warmup: int, steps: int):
    from clfops.training.build import build_module

    # Batches drawn with replacement: a batch size larger than a (small) training set is still measured.
    n = size * (warmup + steps)
    idx = torch.randint(len(splits.train), (n,), generator=torch.Generator().manual_seed(cfg.seed))
    L.seed_everything(cfg.seed, workers=False, verbose=False)
    # The schedule is sized for a real epoch (OneCycle cannot be built for 1-2 steps); speed does not depend on it.
    epoch_steps = max(math.ceil(len(splits.train) / size), warmup + steps, 10)
    module = build_module(cfg, source, splits, steps_per_epoch=epoch_steps)
    timer = _StepTimer(warmup)
    with tempfile.TemporaryDirectory(prefix="clfops-bs-find-") as tmp, quiet_tuner():
        trainer = bare_trainer(cfg, precision, Path(tmp), 1, [timer])
        # The images on the training device first, as `clfops train` feeds them (data.loader.on_device).
        data = on_device(Split(splits.train.x[idx], splits.train.y[idx]), trainer.strategy.root_device)
        trainer.fit(module, BatchLoader(data, size, EpochSampler(n, False, cfg.seed)))
    seconds = max(timer.t1 - timer.t0, 1e-9)
    return BatchRow(size, "ok", round(size * steps / seconds, 1), round(1000 * seconds / steps, 2))


def batch_size_find(cfg: DictConfig, sizes: list[int], warmup: int, steps: int) -> list[BatchRow]:
    """img/s per batch size, smallest first; stops at the first size that does not fit (out of memory)."""
    if not sizes or min(sizes) < 1 or steps < 1 or warmup < 0:
        raise TuningError("batch-size test: need sizes >= 1, --steps >= 1 and --warmup >= 0")
    source, splits, precision = prepare(cfg)
    ordered = sorted(set(sizes))
    # One untimed run first: the process's first training pays one-off costs (kernel selection, allocator,
    # Lightning setup) that would otherwise make the smallest size look several times slower than it is.
    _measure(cfg, source, splits, precision, ordered[0], 1, 1)
    rows: list[BatchRow] = []
    for size in ordered:
        try:
            rows.append(_measure(cfg, source, splits, precision, size, warmup, steps))
        except (MemoryError, RuntimeError) as err:  # torch.OutOfMemoryError and CPU allocator failures
            text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            oom = isinstance(err, MemoryError) or "out of memory" in text.lower() or "allocate" in text.lower()
            rows.append(BatchRow(size, "oom" if oom else "error", note=text[:200]))
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            break
    return rows


def pick_batch_size(rows: list[BatchRow], tolerance: float = 0.05) -> dict[str, int | None]:
    """largest that fits, fastest, and the recommendation: the smallest within `tolerance` of the fastest
    (a smaller batch takes more optimizer steps per epoch for the same speed)."""
    ok = [r for r in rows if r.status == "ok" and r.img_s]
    if not ok:
        return {"largest_fit": None, "fastest": None, "recommended": None}
    best = max(ok, key=lambda r: r.img_s or 0.0)
    near = [r.batch_size for r in ok if (r.img_s or 0.0) >= (1 - tolerance) * (best.img_s or 0.0)]
    return {"largest_fit": max(r.batch_size for r in ok), "fastest": best.batch_size, "recommended": min(near)}


def write_batch_size(rows: list[BatchRow], choice: dict[str, int | None], cfg: DictConfig, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    info = {
        "model": cfg.model.name,
        "data": cfg.data.name,
        "precision": resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator),
        "threads": torch.get_num_threads(),
        "device": "cuda" if cuda_in_use(cfg.trainer.accelerator) else "cpu",
    }
    path = out / "batch_size.json"
    atomic_write_text(path, json.dumps({**choice, **info, "rows": [asdict(r) for r in rows]}, indent=2))
    return path


def print_batch_sizes(rows: list[BatchRow], choice: dict[str, int | None]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("batch size", "img/s", "ms/step", "status", title="training throughput per batch size")
    for r in rows:
        img_s = f"{r.img_s:,.0f}" if r.img_s else "-"
        table.add_row(str(r.batch_size), img_s, f"{r.step_ms:.1f}" if r.step_ms else "-", r.status + f" {r.note}")
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(table)
    if choice["recommended"] is None:
        console.print("no batch size trained: see the status column")
        return
    console.print(
        f"largest that fits: {choice['largest_fit']}  fastest: {choice['fastest']}  ->  "
        f"data.batch_size={choice['recommended']} (the smallest within 5% of the fastest; then re-run "
        "clfops lr-find with it: the best LR grows with the batch)"
    )
