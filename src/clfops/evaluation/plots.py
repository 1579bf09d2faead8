"""The report's figures as PNG bytes, drawn with matplotlib's object API on the Agg canvas.

No pyplot: pyplot keeps global figure state and picks a GUI backend from the environment; a `Figure` on a
`FigureCanvasAgg` needs no display and is freed when it goes out of scope. Each function returns the PNG
bytes, which go both to a file and, base64-encoded, into report.html.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
ANNOTATE_MAX_CLASSES = 20  # beyond this the cell numbers are unreadable


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # No bbox_inches="tight": every figure is laid out already (tight_layout / constrained), and "tight" draws
    # the whole figure a second time to measure it (~half of a report's 4-5 s on 2 cores).
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _matrix_panel(ax: Any, data: np.ndarray, classes: list[str], title: str, fmt: str) -> None:
    im = ax.imshow(data, cmap="Blues", vmin=0)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    k = len(classes)
    ax.set(xticks=range(k), yticks=range(k), title=title, xlabel="predicted class", ylabel="true class")
    ax.set_xticklabels(classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticklabels(classes, fontsize=8)
    if k <= ANNOTATE_MAX_CLASSES:
        threshold = data.max() / 2 if data.size else 0
        for (i, j), value in np.ndenumerate(data):
            text = format(value, fmt)
            if fmt != "d" and value == 0:
                text = "0"
            color = "white" if value > threshold else "black"
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=7 if k > 10 else 8)


def confusion_matrix_png(cm: np.ndarray, classes: list[str]) -> bytes:
    """Counts and row-normalised (recall per true class) side by side, class names on both axes."""
    k = len(classes)
    side = max(4.5, 0.55 * k)
    fig = Figure(figsize=(2 * side + 2.5, side + 1.2))
    left, right = fig.subplots(1, 2)
    rows = cm.sum(axis=1, keepdims=True)
    normalised = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    _matrix_panel(left, cm.astype(int), classes, "Confusion matrix (counts)", "d")
    _matrix_panel(right, normalised, classes, "Row-normalised (share of each true class)", ".2f")
    fig.tight_layout()
    return _png(fig)


def misclassified_png(
    images: np.ndarray, true: list[str], predicted: list[str], confidence: list[float], indices: list[int]
) -> bytes:
    """A grid of images (uint8, N x C x H x W) with true / predicted class and the model's confidence.

    One mosaic image on one Axes, a caption above each tile: 0.1 s for 36 tiles, where 36 subplots with
    constrained layout took 0.9 s on 2 cores (the slowest figure of the report, drawn by every run).
    """
    n = len(images)
    if n == 0:
        fig = Figure(figsize=(5, 1.5))
        fig.text(0.5, 0.5, "No misclassified images", ha="center", va="center", fontsize=14)
        return _png(fig)
    cols = min(n, max(4, math.ceil(math.sqrt(n))))
    rows = math.ceil(n / cols)
    channels, h, w = images.shape[1:]
    gap, caption = max(2, w // 10), max(8, round(0.5 * h))  # pixels between tiles, above each for 3 lines
    cell_h, cell_w = caption + h + gap, w + gap
    mosaic = np.full((rows * cell_h, cols * cell_w, channels), 255, dtype=np.uint8)
    inch_per_px = 1.6 / max(h, w)  # each tile 1.6 in on its long side
    fig = Figure(figsize=(cols * cell_w * inch_per_px, rows * cell_h * inch_per_px + 0.5))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0 - 0.5 / fig.get_figheight()))
    for i in range(n):
        r, c = divmod(i, cols)
        y0, x0 = r * cell_h + caption, c * cell_w + gap // 2
        mosaic[y0 : y0 + h, x0 : x0 + w] = np.transpose(images[i], (1, 2, 0))
        title = f"#{indices[i]}\ntrue: {true[i]}\npred: {predicted[i]} ({confidence[i]:.2f})"
        ax.text(x0 + w / 2, y0 - 1, title, ha="center", va="bottom", fontsize=8, color="firebrick")
    grey = channels == 1
    ax.imshow(mosaic[..., 0] if grey else mosaic, cmap="gray" if grey else None, vmin=0, vmax=255)
    ax.set_axis_off()
    fig.suptitle("Most confident mistakes", fontsize=12, y=1.0 - 0.1 / fig.get_figheight(), va="top")
    return _png(fig)


@dataclass(frozen=True)
class Uncalibrated:
    """The raw softmax's reliability bins and ECE, drawn beside the calibrated ones."""

    bins: list[dict[str, float]]
    ece: float
    temperature: float


def confidence_png(
    confidence: np.ndarray,
    correct: np.ndarray,
    bins: list[dict[str, float]],
    ece: float,
    before: Uncalibrated | None = None,
) -> bytes:
    """Left: confidence histogram of correct vs wrong predictions. Right: reliability diagram (calibrated bars;
    with `before`, the uncalibrated model's accuracy against mean confidence per bin as a line)."""
    fig = Figure(figsize=(12, 4.5))
    hist, rel = fig.subplots(1, 2)
    edges = np.linspace(0, 1, 31)
    # Side-by-side bars per bin (not overlaid), log counts: a good model's correct predictions pile up near 1.
    hist.hist(
        [confidence[correct], confidence[~correct]],
        bins=edges,
        color=["tab:green", "tab:red"],
        label=[f"correct ({int(correct.sum()):,})", f"wrong ({int((~correct).sum()):,})"],
    )
    hist.set(xlabel="confidence (probability of the predicted class)", ylabel="images (log scale)", title="Confidence")
    hist.set_yscale("log")
    hist.legend(loc="upper left")
    lower = np.array([b["lower"] for b in bins])
    width = bins[0]["upper"] - bins[0]["lower"] if bins else 1.0
    acc = np.array([b["accuracy"] for b in bins])
    conf = np.array([b["confidence"] for b in bins])
    filled = np.array([b["count"] > 0 for b in bins])
    rel.bar(
        lower[filled], acc[filled], width=width, align="edge", edgecolor="black", color="tab:blue", label="accuracy"
    )
    rel.plot(lower[filled] + width / 2, conf[filled], "o", color="tab:red", label="mean confidence")
    title = f"Reliability diagram (ECE {ece:.4f}, {len(bins)} bins)"
    if before is not None:
        shown = [b for b in before.bins if b["count"] > 0]
        rel.plot(
            [b["confidence"] for b in shown],
            [b["accuracy"] for b in shown],
            "-^",
            color="tab:grey",
            label=f"before calibration (ECE {before.ece:.4f})",
        )
        title = f"Reliability, temperature {before.temperature:.3f} (ECE {ece:.4f}, was {before.ece:.4f})"
    rel.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    rel.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy")
    rel.set_title(title)
    rel.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return _png(fig)


def per_class_png(classes: list[str], f1: list[float], macro_f1: float) -> bytes:
    """Horizontal bars of per-class F1 with the macro average as a line. Each value is written right of its
    bar, in room the x-axis keeps past 1.0 (a label on a bar near 1.0 used to overlap it); the macro value is
    in the title, so no legend box covers a bar."""
    k = len(classes)
    fig = Figure(figsize=(8, max(3.0, 0.35 * k + 1.2)))
    ax = fig.subplots()
    y = np.arange(k)
    ax.barh(y, f1, color="tab:blue")
    for yi, value in zip(y, f1, strict=True):
        box = {"facecolor": "white", "edgecolor": "none", "pad": 0.5}  # the macro line passes behind the label
        ax.text(value + 0.01, yi, f"{value:.3f}", va="center", ha="left", fontsize=8, bbox=box, zorder=3)
    ax.axvline(macro_f1, color="tab:orange", linestyle="--", zorder=2)
    ax.set(yticks=y, xlim=(0, 1.12), xticks=np.linspace(0, 1, 6), xlabel="F1")
    ax.set_title(f"Per-class F1  (dashed: macro F1 {macro_f1:.3f})")
    ax.set_yticklabels(classes, fontsize=8)
    ax.invert_yaxis()
    fig.tight_layout()
    return _png(fig)


def learning_curves_png(rows: list[dict[str, Any]]) -> bytes:
    """Loss and accuracy per epoch, train vs val, with the LR on a second axis: the run at a glance.
    Rows from an older run's metrics.csv (`train/loss_epoch`) are read under today's names."""
    from clfops.tracking.metric_names import upgrade

    epochs = [upgrade(r) for r in rows if "val/acc" in r or "train/acc" in r]
    x = [r["epoch"] + 1 for r in epochs]
    fig = Figure(figsize=(11, 4))
    FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, (train_key, val_key, title) in zip(
        (ax_loss, ax_acc), (("train/loss", "val/loss", "loss"), ("train/acc", "val/acc", "accuracy")), strict=True
    ):
        for key, label, style in ((train_key, "train", "-o"), (val_key, "val", "-s")):
            points = [(xi, r[key]) for xi, r in zip(x, epochs, strict=True) if key in r]
            if points:
                ax.plot(*zip(*points, strict=True), style, label=label, markersize=4)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    lr = [(xi, r["lr"]) for xi, r in zip(x, epochs, strict=True) if "lr" in r]
    if lr:
        ax_lr = ax_loss.twinx()
        ax_lr.plot(*zip(*lr, strict=True), ":", color="grey", label="lr")
        ax_lr.set_ylabel("learning rate (end of epoch)", color="grey")
    ax_loss.legend(loc="upper right")
    ax_acc.legend(loc="lower right")
    fig.tight_layout()
    return _png(fig)
