"""The table and figure of a study (`clfops compare`, `clfops train -m`): per-epoch curves of each run, the table
(best/final val acc, overfit gap, training time, test acc), comparison.csv/.md/.png and curves.json, and the
console table. Read from a run dir's metrics.csv as a study runs, or from MLflow histories for `--runs`.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clfops.safe_files import atomic_write_bytes, atomic_write_text

STUDY_METRICS = ["val/acc", "lr", "overfit_gap", "epoch_seconds", "test/acc"]


COLUMNS = ["run", "status", "epochs", "best_val_acc", "best_epoch", "final_val_acc", "overfit_gap", "train_s"]
COLUMNS += ["test_acc", "run_id"]


@dataclass
class Curves:
    """One run of a study, per epoch (index 0 = epoch 1)."""

    label: str
    run_id: str | None
    status: str
    val_acc: list[float]
    lr: list[float]
    overfit_gap: list[float]
    epoch_seconds: list[float]
    test_acc: float | None


def curves_from_rows(label: str, run_id: str | None, status: str, rows: list[dict[str, Any]]) -> Curves:
    """From a run dir's metrics.csv rows (clfops.tracking.rundirs.read_metrics), in epoch order."""

    def per_epoch(key: str) -> list[float]:
        return [float(r[key]) for r in sorted(rows, key=lambda r: (r["epoch"], r["step"])) if key in r]

    test = per_epoch("test/acc")
    return Curves(
        label,
        run_id,
        status,
        per_epoch("val/acc"),
        per_epoch("lr"),
        per_epoch("overfit_gap"),
        per_epoch("epoch_seconds"),
        test[-1] if test else None,
    )


def curves_from_history(label: str, h: Any) -> Curves:
    """From a tracking.RunHistory: each per-epoch metric is logged once per epoch, so its n-th point (by step)
    is epoch n."""

    def values(key: str) -> list[float]:
        return [v for _, v in h.history.get(key, [])]

    return Curves(
        label,
        h.run_id,
        h.status,
        values("val/acc"),
        values("lr"),
        values("overfit_gap"),
        values("epoch_seconds"),
        h.latest.get("test/acc"),
    )


def table_row(c: Curves) -> dict[str, Any]:
    best = max(range(len(c.val_acc)), key=lambda i: c.val_acc[i]) if c.val_acc else None
    return {
        "run": c.label,
        "status": c.status,
        "epochs": len(c.val_acc),
        "best_val_acc": round(c.val_acc[best], 4) if best is not None else None,
        "best_epoch": best + 1 if best is not None else None,
        "final_val_acc": round(c.val_acc[-1], 4) if c.val_acc else None,
        "overfit_gap": round(c.overfit_gap[-1], 4) if c.overfit_gap else None,  # train acc - val acc, last epoch
        "train_s": round(sum(c.epoch_seconds), 1) if c.epoch_seconds else None,  # train + validation, all epochs
        "test_acc": round(c.test_acc, 4) if c.test_acc is not None else None,
        "run_id": c.run_id or "",
    }


def _markdown(rows: list[dict[str, Any]], title: str) -> str:
    lines = [f"# {title}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join("-" if row[k] is None else str(row[k]) for k in COLUMNS) + " |")
    notes = "best/final: val/acc; overfit_gap: train acc - val acc at the last epoch; train_s: sum of epoch_seconds"
    return "\n".join([*lines, "", notes, ""])


def comparison_png(curves: list[Curves], title: str) -> bytes:
    """Val acc per epoch and LR (end of epoch) per epoch, every run on one axis each."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(12, 4.5))
    FigureCanvasAgg(fig)
    ax_acc, ax_lr = fig.subplots(1, 2)
    for c in curves:
        if c.val_acc:
            ax_acc.plot(range(1, len(c.val_acc) + 1), c.val_acc, "-o", markersize=3, label=c.label)
        if c.lr:
            ax_lr.plot(range(1, len(c.lr) + 1), c.lr, "-o", markersize=3, label=c.label)
    lrs = [v for c in curves for v in c.lr]
    if lrs and min(lrs) > 0 and max(lrs) / min(lrs) > 20:
        ax_lr.set_yscale("log")
    ax_acc.set(xlabel="epoch", ylabel="val/acc", title="validation accuracy")
    ax_lr.set(xlabel="epoch", ylabel="learning rate (end of epoch)", title="learning rate")
    for ax in (ax_acc, ax_lr):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def write_report(curves: list[Curves], out: Path, title: str) -> list[Path]:
    """comparison.csv, comparison.md, comparison.png and curves.json in `out`; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [table_row(c) for c in curves]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    paths = [out / n for n in ("comparison.csv", "comparison.md", "comparison.png", "curves.json")]
    atomic_write_text(paths[0], buf.getvalue())
    atomic_write_text(paths[1], _markdown(rows, title))
    atomic_write_bytes(paths[2], comparison_png(curves, title))
    atomic_write_text(paths[3], json.dumps([c.__dict__ for c in curves], indent=2))
    return paths


def print_table(curves: list[Curves]) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    table = Table(*COLUMNS[:-1], title="comparison (val/acc; overfit_gap = train acc - val acc, last epoch)")
    for c in curves:
        row = table_row(c)
        table.add_row(*("-" if row[k] is None else str(row[k]) for k in COLUMNS[:-1]))
    Console(width=None if sys.stdout.isatty() else 140).print(table)
