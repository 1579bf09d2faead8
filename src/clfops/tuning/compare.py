"""`clfops compare`: one recipe across the values of one override, or a table of existing runs.

A study is one MLflow parent run; each value trains as a normal `clfops train` run nested under it (tag
`mlflow.parentRunId`, set as the run starts, so an interrupted study still shows its children). The table
(best/final val acc, overfit gap, training time, test acc) and one figure (val acc and LR per epoch, every
run on one axis) go to a folder and to the parent run (report.py). `--runs` rebuilds the same from MLflow
histories. `clfops train -m` (Hydra's multirun grammar, several keys) runs its grid through the same `run_grid`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clfops import config as C
from clfops.tuning import TuningError
from clfops.tuning.report import STUDY_METRICS, Curves, curves_from_history, curves_from_rows, table_row, write_report
from clfops.tuning.study import StudyMember, quiet_console, slug, study_experiment, unique_run_name


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


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


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
