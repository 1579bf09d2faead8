"""`clfops lr-find` and `clfops batch-size-find`: answers to "which LR?" and "which batch size?" on this machine.

Both run the real recipe: the composed config's data, network and Classifier (augmentation, normalisation,
optimizer groups), trained by a Lightning Trainer with the run's precision and threads; nothing is logged
as a training run. The LR range test is Lightning's Tuner (exponential LR sweep, smoothed loss, suggestion
at the steepest descent); the batch-size test times real optimizer steps per batch size.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import math
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from clfops import config as C
from clfops.data import Source, Split
from clfops.data.loader import BatchLoader, EpochSampler, Splits, make_splits, on_device, train_loader
from clfops.data.sources import load_source
from clfops.hardware import configure_cuda, configure_threads, cuda_in_use, resolve_precision
from clfops.safe_files import atomic_write_bytes, atomic_write_text
from clfops.training.callbacks import AtomicCheckpointIO
from clfops.training.module import NonFiniteLossError
from clfops.training.progress import quiet_libraries
from clfops.tuning import TuningError

AUTO_LR = "optimizer.lr=auto"


def _prepare(cfg: DictConfig) -> tuple[Source, Splits, str]:
    """Threads, seed, data and precision exactly as `clfops train` sets them up."""
    quiet_libraries()
    configure_threads(cfg.trainer.num_threads)
    configure_cuda(cfg.trainer.accelerator, bool(cfg.deterministic))
    L.seed_everything(cfg.seed, workers=False, verbose=False)
    size = None if cfg.data.size is None else (int(cfg.data.size[0]), int(cfg.data.size[1]))
    source = load_source(cfg.data.name, cfg.data.root, cfg.data.channels, size)
    splits = make_splits(source, cfg.data.val_fraction, cfg.seed, cfg.data.train_limit)
    return source, splits, resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)


def _bare_trainer(cfg: DictConfig, precision: str, work_dir: Path, max_epochs: int, callbacks: list) -> L.Trainer:
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


# ----- LR range test ---------------------------------------------------------------------------------------


@dataclass
class LRFind:
    lrs: list[float]
    losses: list[float]  # Lightning's smoothed training loss (EMA, beta 0.98) at each LR
    suggestion: float | None
    min_lr: float
    max_lr: float
    steps: int  # steps asked for; fewer were run when the loss diverged
    diverged: bool


def suggest_lr(lrs: list[float], losses: list[float], skip_begin: int = 10, skip_end: int = 1) -> float | None:
    """The LR at the steepest descent of the smoothed loss per decade of LR (finite points only).

    Lightning's own `suggestion()` differentiates with respect to the LR itself; on its exponential sweep
    that divides the slope by the LR and drags the pick to the flat start of the curve (5e-5 where the loss
    falls fastest near 1e-3 for AdamW here; Lightning issue #21141). Log-LR spacing is the slope one reads
    off the plot."""
    lr_t = torch.tensor(lrs[skip_begin:-skip_end], dtype=torch.float64)
    loss_t = torch.tensor(losses[skip_begin:-skip_end], dtype=torch.float64)
    finite = torch.isfinite(loss_t) & (lr_t > 0)
    lr_t, loss_t = lr_t[finite], loss_t[finite]
    if len(loss_t) < 2:
        return None
    gradients = torch.gradient(loss_t, spacing=[torch.log10(lr_t)])[0]
    return float(lr_t[int(torch.argmin(gradients))])


@contextlib.contextmanager
def _quiet_tuner() -> Iterator[None]:
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


def lr_find(cfg: DictConfig, min_lr: float, max_lr: float, steps: int, work_dir: Path) -> LRFind:
    """Train `steps` batches while the LR grows exponentially from min_lr to max_lr; weights are restored after."""
    from lightning.pytorch.tuner import Tuner

    if not 0 < min_lr < max_lr:
        raise TuningError(f"LR range {min_lr:g}..{max_lr:g}: need 0 < --min-lr < --max-lr")
    if steps < 13:  # the suggestion skips the first 10 and the last point and needs 2 more
        raise TuningError(f"--steps {steps}: the LR range test needs at least 13 steps")
    from clfops.training.build import build_module

    source, splits, precision = _prepare(cfg)
    loader = train_loader(splits.train, cfg.data.batch_size, cfg.seed)
    module = build_module(cfg, source, splits, steps_per_epoch=len(loader))
    epochs = math.ceil(steps / max(1, len(loader))) + 1  # the test may span several epochs of a small set
    trainer = _bare_trainer(cfg, precision, work_dir, epochs, [])
    try:
        with _quiet_tuner():
            found = Tuner(trainer).lr_find(
                module, train_dataloaders=loader, min_lr=min_lr, max_lr=max_lr, num_training=steps, update_attr=False
            )
        lrs, losses = list(found.results["lr"]), list(found.results["loss"])
    except NonFiniteLossError:
        # The loss became NaN/inf before Lightning's divergence stop (4x the best loss) fired: keep the points
        # its recording callback holds up to there (the LR of the failed step has no loss).
        recorder = next(cb for cb in trainer.callbacks if hasattr(cb, "lrs") and hasattr(cb, "losses"))
        lrs, losses = list(recorder.lrs[: len(recorder.losses)]), list(recorder.losses)
    diverged = len(losses) < steps
    return LRFind(lrs, losses, suggest_lr(lrs, losses), min_lr, max_lr, steps, diverged)


def lr_find_png(result: LRFind, title: str) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot(result.lrs, result.losses, "-", label="smoothed training loss")
    if result.suggestion is not None:
        i = result.lrs.index(result.suggestion)
        ax.plot([result.suggestion], [result.losses[i]], "o", color="red", markersize=9, label="suggestion")
        ax.axvline(result.suggestion, color="red", linestyle=":")
    ax.set_xscale("log")
    ax.set(xlabel="learning rate (log scale)", ylabel="loss", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def write_lr_find(result: LRFind, cfg: DictConfig, out: Path) -> list[Path]:
    """lr_find.png (loss vs LR, suggestion marked) and lr_find.json (every point) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    lr = f"{result.suggestion:.3g}" if result.suggestion is not None else "none"
    title = f"LR range test: {cfg.model.name}, {cfg.optimizer.name}, batch {cfg.data.batch_size} -> {lr}"
    png, js = out / "lr_find.png", out / "lr_find.json"
    atomic_write_bytes(png, lr_find_png(result, title))
    atomic_write_text(js, json.dumps({"suggested_lr": result.suggestion, **asdict(result)}, indent=2))
    return [png, js]


def log_lr_find(cfg: DictConfig, result: LRFind, files: list[Path]) -> str:
    """An MLflow run `lr-find` in the recipe's experiment: config params, the curve, the suggestion, the files."""
    from clfops.tracking import Tracker

    experiment = cfg.tracking.experiment or cfg.data.name
    tracker = Tracker.start(
        cfg.tracking.uri, experiment, "lr-find", {"clfops.kind": "lr_find"}, cfg.tracking.connect_timeout_s
    )
    tracker.log_params(C.flatten(cfg) | {"lr_find.min_lr": result.min_lr, "lr_find.max_lr": result.max_lr})
    for i, (lr, loss) in enumerate(zip(result.lrs, result.losses, strict=True)):
        tracker.log_metrics({"lr_find/lr": lr, "lr_find/loss": loss}, step=i)
    if result.suggestion is not None:
        tracker.log_metrics({"lr_find/suggested_lr": result.suggestion}, step=0)
    for path in files:
        tracker.log_artifact(path)
    tracker.end("FINISHED")
    return tracker.run_id


def resolve_lr_auto(overrides: list[str], steps: int = 100) -> tuple[list[str], float | None]:
    """`optimizer.lr=auto` -> run the LR range test on the rest of the recipe and put its suggestion in
    place (`optimizer.lr=X`), recorded as `+tuning.lr_found=X` (a param of the run). Else unchanged."""
    if AUTO_LR not in overrides:
        return list(overrides), None
    rest = [o for o in overrides if o != AUTO_LR]
    cfg = C.compose("train", rest)
    with tempfile.TemporaryDirectory(prefix="clfops-lr-find-") as tmp:
        result = lr_find(cfg, 1e-6, 1.0, steps, Path(tmp))
    if result.suggestion is None:
        raise TuningError("optimizer.lr=auto: the LR range test gave no suggestion; set optimizer.lr=VALUE")
    lr = float(f"{result.suggestion:.3g}")
    return [*rest, f"optimizer.lr={lr}", f"+tuning.lr_found={lr}"], lr


# ----- batch-size test -------------------------------------------------------------------------------------


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
    with tempfile.TemporaryDirectory(prefix="clfops-bs-find-") as tmp, _quiet_tuner():
        trainer = _bare_trainer(cfg, precision, Path(tmp), 1, [timer])
        # The images on the training device first, as `clfops train` feeds them (data.loader.on_device).
        data = on_device(Split(splits.train.x[idx], splits.train.y[idx]), trainer.strategy.root_device)
        trainer.fit(module, BatchLoader(data, size, EpochSampler(n, False, cfg.seed)))
    seconds = max(timer.t1 - timer.t0, 1e-9)
    return BatchRow(size, "ok", round(size * steps / seconds, 1), round(1000 * seconds / steps, 2))


def batch_size_find(cfg: DictConfig, sizes: list[int], warmup: int, steps: int) -> list[BatchRow]:
    """img/s per batch size, smallest first; stops at the first size that does not fit (out of memory)."""
    if not sizes or min(sizes) < 1 or steps < 1 or warmup < 0:
        raise TuningError("batch-size test: need sizes >= 1, --steps >= 1 and --warmup >= 0")
    source, splits, precision = _prepare(cfg)
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
