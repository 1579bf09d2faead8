"""`clfops compare`: one recipe across the values of one override, or a table of existing runs.

A study is one MLflow parent run; each value trains as a normal `clfops train` run nested under it (tag
`mlflow.parentRunId`, set as the run starts, so an interrupted study still shows its children). The table
(best/final val acc, overfit gap, training time, test acc) and one figure (val acc and LR per epoch, every
run on one axis) go to a folder and to the parent run. `--runs` rebuilds the same from MLflow histories.
`clfops train -m` (Hydra's multirun grammar, several keys) runs its grid through the same `run_grid`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L

from clfops import config as C
from clfops.safe_files import atomic_write_bytes, atomic_write_text
from clfops.tuning import TuningError

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


def split_values(text: str) -> list[str]:
    """'a,b,[1,2]' -> ['a', 'b', '[1,2]']: commas inside brackets or quotes belong to the value."""
    values, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            values.append(text[start:i].strip())
            start = i + 1
    values.append(text[start:].strip())
    return values


def parse_vary(text: str) -> tuple[str, list[str]]:
    """`scheduler=step,cosine` -> ('scheduler', ['step', 'cosine'])."""
    key, sep, rest = text.partition("=")
    values = split_values(rest) if sep else []
    if not key.strip() or len(values) < 2 or any(not v for v in values) or len(set(values)) != len(values):
        raise TuningError(f"--vary {text!r}: give one key and 2+ distinct values, e.g. --vary scheduler=step,cosine")
    return key.strip(), values


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:60] or "run"


def unique_run_name(root: Path, name: str) -> str:
    """`name`, or `name-<time>` when a run dir of that name exists already (an earlier study of the same name)."""
    return name if not (root / name).exists() else f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


class StudyMember(L.Callback):
    """Nests the run under the study's parent run as soon as it starts, and remembers its id and run dir.

    The run's MLflow id comes from RUN_DIR/run.json, which train() writes before fitting."""

    def __init__(self, parent_run_id: str | None, tags: dict[str, str]) -> None:
        self.parent_run_id, self.tags = parent_run_id, tags
        self.run_id: str | None = None
        self.run_dir: Path | None = None
        self.uri: str | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from clfops.tracking import PARENT_TAG, set_run_tags

        self.run_dir = Path(trainer.default_root_dir)
        info_path = self.run_dir / "run.json"
        if not info_path.is_file():
            return  # tracking.enabled=false: nothing to nest
        info = json.loads(info_path.read_text())
        self.run_id, self.uri = info["run_id"], info["tracking_uri"]
        tags = dict(self.tags) | ({PARENT_TAG: self.parent_run_id} if self.parent_run_id else {})
        set_run_tags(self.uri, self.run_id, tags)


@contextlib.contextmanager
def quiet_console(verbose: bool) -> Iterator[None]:
    """Only warnings from training on the console (train.log keeps everything): one line per run is ours."""
    handlers = [
        h
        for h in logging.getLogger("clfops").handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]
    levels = [h.level for h in handlers]
    if not verbose:
        for h in handlers:
            h.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for h, level in zip(handlers, levels, strict=True):
            h.setLevel(level)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def study_experiment(cfg: Any) -> str:
    """Parent and children must share an experiment for MLflow to nest them: the recipe's, pinned."""
    return str(cfg.tracking.experiment or cfg.data.name)


@dataclass
class Variant:
    """One run of a study: its label (table row, tag clfops.study.value), its own overrides, its run-dir stem."""

    label: str
    overrides: list[str]
    name: str


def run_study(overrides: list[str], group: str, vary: str, out: Path, verbose: bool = False) -> list[Curves]:
    """Train the recipe once per value of `vary`, sequentially, as children of one parent run; write the report."""
    key, values = parse_vary(vary)
    variants = [Variant(f"{key}={v}", [f"{key}={v}"], f"{group}-{key.split('.')[-1]}-{v}") for v in values]
    return run_grid(overrides, group, vary, variants, out, verbose, kind="compare")


def grid_variants(group: str, jobs: list[list[str]]) -> list[Variant]:
    """`clfops train -m`: each grid point (config.expand_grid) labelled by the overrides that differ between
    points, e.g. 'optimizer.lr=0.001 model=cnn'."""
    common = set.intersection(*(set(job) for job in jobs)) if jobs else set()
    variants = []
    for i, job in enumerate(jobs):
        label = " ".join(o for o in job if o not in common) or f"run {i + 1}"
        variants.append(Variant(label, job, f"{group}-{i + 1}-{label}"))
    return variants


def run_grid(
    overrides: list[str],
    group: str,
    vary: str,
    variants: list[Variant],
    out: Path,
    verbose: bool = False,
    kind: str = "compare",
) -> list[Curves]:
    """Train `overrides` + each variant's, sequentially, as children of one parent run; write the report."""
    from clfops.tracking import Tracker

    base = ["logging.progress=none", *overrides]  # one line per run; the user's own setting comes later and wins
    cfgs = [C.compose("train", [*base, *v.overrides]) for v in variants]  # every variant checked before any run
    cfg0 = cfgs[0]
    experiment = study_experiment(cfg0)
    parent = None
    if cfg0.tracking.enabled:
        tags = {"clfops.study": group, "clfops.study.kind": kind, "clfops.study.vary": vary}
        timeout = cfg0.tracking.connect_timeout_s
        parent = Tracker.start(cfg0.tracking.uri, experiment, f"{kind}-{group}", tags, timeout)
        parent.log_params({"study.vary": vary[:500], "study.overrides": " ".join(overrides)[:500] or "-"})
        print(f"study {group}: parent MLflow run {parent.run_id} in experiment {experiment!r}", flush=True)
    curves: list[Curves] = []
    try:
        for i, (variant, cfg) in enumerate(zip(variants, cfgs, strict=True)):
            name = unique_run_name(Path(cfg.run.root), slug(variant.name))
            run_ov = [*base, *variant.overrides, f"tracking.experiment={experiment}", f"run.name={name}"]
            curve, note = _run_one(run_ov, variant.label, group, parent.run_id if parent else None, verbose)
            curves.append(curve)
            print(_progress(i + 1, len(variants), curves) + note, flush=True)
    except BaseException:
        if parent is not None:
            parent.end("KILLED", "study interrupted")
        raise
    files = write_report(curves, out, f"study {group}: {vary}")
    if parent is not None:
        _finish_parent(parent, curves, files)
    return curves


def _run_one(run_ov: list[str], label: str, group: str, parent_id: str | None, verbose: bool) -> tuple[Curves, str]:
    """One child run: (its curves, a note for the progress line when it failed)."""
    from clfops.tracking.rundirs import read_metrics
    from clfops.training.train import train

    member = StudyMember(parent_id, {"clfops.study": group, "clfops.study.value": label})
    status, note = "FINISHED", ""
    with quiet_console(verbose):
        try:
            train(C.compose("train", run_ov), run_ov, [member])
        except KeyboardInterrupt:
            raise
        except Exception as err:  # one failed value (diverged, ...) does not end the study
            status, note = "FAILED", f"  ({type(err).__name__}: {str(err).strip()[:120]})"
    rows = read_metrics(member.run_dir / "metrics.csv") if member.run_dir else []
    return curves_from_rows(label, member.run_id, status, rows), note


def _progress(done: int, total: int, curves: list[Curves]) -> str:
    row = table_row(curves[-1])
    ranked = [table_row(c) for c in curves if c.val_acc]
    best = max(ranked, key=lambda r: r["best_val_acc"]) if ranked else None
    best_text = f"{best['run']} {_fmt(best['best_val_acc'])}" if best else "-"
    return (
        f"[{done}/{total}] {row['run']:<28} {row['status']:<8} best val/acc {_fmt(row['best_val_acc'])}  "
        f"final {_fmt(row['final_val_acc'])}  test {_fmt(row['test_acc'])}  {row['train_s'] or 0:.1f}s"
        f"  | best so far: {best_text}"
    )


def _finish_parent(parent: Any, curves: list[Curves], files: list[Path]) -> None:
    ranked = [table_row(c) for c in curves if c.val_acc]
    if ranked:
        best = max(ranked, key=lambda r: r["best_val_acc"])
        parent.log_metrics({"study/best_val_acc": best["best_val_acc"]}, step=0)
        parent.set_tags({"clfops.study.best": best["run"], "clfops.study.best_run_id": best["run_id"]})
    for path in files:
        parent.log_artifact(path, "study")
    parent.end("FINISHED")


def compare_runs(uri: str | None, run_ids: list[str], out: Path) -> list[Curves]:
    """The table and figure for existing runs; a study's parent run id stands for all its children."""
    from clfops.tracking import child_run_ids, run_histories

    expanded: list[str] = []
    for run_id in run_ids:
        children = child_run_ids(uri, run_id)
        expanded += children or [run_id]
    if not expanded:
        raise TuningError("compare --runs: give at least one MLflow run id")
    curves = []
    for h in run_histories(uri, list(dict.fromkeys(expanded)), STUDY_METRICS):
        label = h.tags.get("clfops.study.value") or h.name
        curves.append(curves_from_history(label, h))
    write_report(curves, out, f"{len(curves)} runs")
    return curves


def print_table(curves: list[Curves]) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    table = Table(*COLUMNS[:-1], title="comparison (val/acc; overfit_gap = train acc - val acc, last epoch)")
    for c in curves:
        row = table_row(c)
        table.add_row(*("-" if row[k] is None else str(row[k]) for k in COLUMNS[:-1]))
    Console(width=None if sys.stdout.isatty() else 140).print(table)
