"""`clfops lr-find` and `optimizer.lr=auto`: which LR, answered by a range test on the real recipe.

The LR range test is Lightning's Tuner (exponential LR sweep, smoothed loss) on the recipe as finders.py sets it
up; the suggestion is ours (suggest_lr: the steepest descent per decade of LR). The curve goes to lr_find.png and
lr_find.json and, asked for, to an MLflow run `lr-find`.
"""

from __future__ import annotations

import io
import json
import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from clfops import config as C
from clfops.data.loader import train_loader
from clfops.safe_files import atomic_write_bytes, atomic_write_text
from clfops.training.module import NonFiniteLossError
from clfops.tuning import TuningError
from clfops.tuning.finders import bare_trainer, prepare, quiet_tuner

AUTO_LR = "optimizer.lr=auto"


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


def lr_find(cfg: DictConfig, min_lr: float, max_lr: float, steps: int, work_dir: Path) -> LRFind:
    """Train `steps` batches while the LR grows exponentially from min_lr to max_lr; weights are restored after."""
    from lightning.pytorch.tuner import Tuner

    if not 0 < min_lr < max_lr:
        raise TuningError(f"LR range {min_lr:g}..{max_lr:g}: need 0 < --min-lr < --max-lr")
    if steps < 13:  # the suggestion skips the first 10 and the last point and needs 2 more
        raise TuningError(f"--steps {steps}: the LR range test needs at least 13 steps")
    from clfops.training.build import build_module

    source, splits, precision = prepare(cfg)
    loader = train_loader(splits.train, cfg.data.batch_size, cfg.seed)
    module = build_module(cfg, source, splits, steps_per_epoch=len(loader))
    epochs = math.ceil(steps / max(1, len(loader))) + 1  # the test may span several epochs of a small set
    trainer = bare_trainer(cfg, precision, work_dir, epochs, [])
    try:
        with quiet_tuner():
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
