"""Commands that pick settings: lr-find, batch-size-find, compare, sweep."""

from __future__ import annotations

import click

from clfops.cli.base import STORE_HELP, friendly, main
from clfops.cli.training import config_dir_option
from clfops.errors import UserError


@main.command("lr-find")
@config_dir_option
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@click.option("--min-lr", default=1e-6, show_default=True, type=float, help="Lowest LR tested.")
@click.option("--max-lr", default=1.0, show_default=True, type=float, help="Highest LR tested.")
@click.option("--steps", default=100, show_default=True, type=click.IntRange(13), help="Training steps = LRs tested.")
@click.option("--out", default="tuning", show_default=True, help="Folder for lr_find.png and lr_find.json.")
@click.option("--log-mlflow", is_flag=True, help="Also record the test as an MLflow run named lr-find.")
@friendly
def lr_find(overrides: tuple[str, ...], min_lr: float, max_lr: float, steps: int, out: str, log_mlflow: bool) -> None:
    """LR range test on the recipe (same OVERRIDES as train): loss-vs-LR plot and a suggested optimizer.lr."""
    import tempfile
    from pathlib import Path

    from clfops.config import compose
    from clfops.tuning import TuningError
    from clfops.tuning.lr_find import log_lr_find, write_lr_find
    from clfops.tuning.lr_find import lr_find as run_lr_find

    cfg = compose("train", list(overrides))
    with tempfile.TemporaryDirectory(prefix="clfops-lr-find-") as tmp:
        result = run_lr_find(cfg, min_lr, max_lr, steps, Path(tmp))
    files = write_lr_find(result, cfg, Path(out))
    click.echo(f"wrote {', '.join(str(f) for f in files)}")
    if log_mlflow:
        click.echo(f"MLflow run {log_lr_find(cfg, result, files)}")
    if result.suggestion is None:
        raise TuningError(f"no suggestion: the loss diverged after {len(result.losses)} steps; lower --max-lr")
    stop = f"; the loss diverged at lr {result.lrs[-1]:.2g}" if result.diverged else ""
    click.echo(
        f"suggested optimizer.lr={result.suggestion:.3g}  (steepest loss descent, {len(result.lrs)} steps{stop})"
    )


@main.command("batch-size-find")
@config_dir_option
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@click.option("--sizes", default="32,64,128,256,512,1024", show_default=True, help="Batch sizes to time.")
@click.option("--steps", default=5, show_default=True, type=click.IntRange(1), help="Timed steps per size.")
@click.option("--warmup", default=2, show_default=True, type=click.IntRange(0), help="Untimed steps first.")
@click.option("--out", default="tuning", show_default=True, help="Folder for batch_size.json.")
@friendly
def batch_size_find(overrides: tuple[str, ...], sizes: str, steps: int, warmup: int, out: str) -> None:
    """Training img/s per batch size on this machine; the largest that fits and the one to use."""
    from pathlib import Path

    from clfops.config import compose
    from clfops.tuning import TuningError
    from clfops.tuning.batch_size_find import batch_size_find, pick_batch_size, print_batch_sizes, write_batch_size

    try:
        size_list = [int(v) for v in sizes.split(",") if v.strip()]
    except ValueError:
        raise TuningError(f"--sizes {sizes!r}: give comma-separated integers, e.g. 64,128,256") from None
    cfg = compose("train", list(overrides))
    rows = batch_size_find(cfg, size_list, warmup, steps)
    choice = pick_batch_size(rows)
    print_batch_sizes(rows, choice)
    click.echo(f"wrote {write_batch_size(rows, choice, cfg, Path(out))}")


@main.command()
@config_dir_option
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--group", help="Study name: the parent run's name and the folder studies/NAME.")
@click.option("--vary", help="KEY=V1,V2,...: the one override that changes, e.g. scheduler=step,cosine.")
@click.option("--runs", "from_runs", is_flag=True, help="ARGS are MLflow run ids (a study's parent = its runs).")
@click.option("--out", help="Output folder (default studies/NAME, or studies/runs-<time> with --runs).")
@click.option("--tracking-uri", help=STORE_HELP)
@click.option("--verbose", is_flag=True, help="Show the training log of every run.")
@friendly
def compare(
    args: tuple[str, ...],
    group: str | None,
    vary: str | None,
    from_runs: bool,
    out: str | None,
    tracking_uri: str | None,
    verbose: bool,
) -> None:
    """Run a study (ARGS = the recipe's overrides) or compare existing runs (--runs ID ID...): table + plots.

    \b
    clfops compare --group sched --vary scheduler=step,multistep,exponential,cosine,onecycle,plateau
    clfops compare --group aug --vary augment=none,basic,strong trainer.max_epochs=10
    clfops compare --runs RUN_ID RUN_ID ...
    """
    import time
    from pathlib import Path

    if from_runs and (group or vary):  # checked before the imports below (Lightning, MLflow: seconds)
        raise UserError("compare: --runs builds a table of existing runs; leave out --group and --vary")
    if not from_runs and (not group or not vary):
        raise UserError("compare: give --group NAME and --vary KEY=V1,V2,... (or --runs ID ID...)")
    from clfops.tuning.compare import compare_runs, run_study
    from clfops.tuning.report import print_table

    if from_runs:
        folder = Path(out) if out else Path("studies") / f"runs-{time.strftime('%Y%m%d-%H%M%S')}"
        curves = compare_runs(tracking_uri, list(args), folder)
    else:
        assert group is not None and vary is not None
        overrides = list(args) + ([f"tracking.uri={tracking_uri}"] if tracking_uri else [])
        folder = Path(out) if out else Path("studies") / group
        curves = run_study(overrides, group, vary, folder, verbose)
    print_table(curves)
    click.echo(f"wrote {folder}/comparison.csv, comparison.md, comparison.png")


@main.command()
@config_dir_option
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@click.option("--trials", required=True, type=click.IntRange(1), help="Finished trials the study should hold.")
@click.option("--space", required=True, type=click.Path(dir_okay=False), help="Search space YAML (docs/tuning.md).")
@click.option("--study-name", help="Re-attach to this study (resume), or name a new one.")
@click.option("--storage", help="sqlite:///FILE or postgresql://USER:PW@HOST:PORT/DB (default optuna.db by mlflow.db).")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1, 64), help="Parallel worker processes.")
@click.option("--out", help="Output folder (default studies/STUDY_NAME).")
@click.option("--prune-startup", default=5, show_default=True, type=click.IntRange(0), help="Trials before pruning.")
@click.option("--prune-warmup", default=1, show_default=True, type=click.IntRange(0), help="Epochs before pruning.")
@click.option("--verbose", is_flag=True, help="Show the training log and Optuna's messages.")
@friendly
def sweep(
    overrides: tuple[str, ...],
    trials: int,
    space: str,
    study_name: str | None,
    storage: str | None,
    jobs: int,
    out: str | None,
    prune_startup: int,
    prune_warmup: int,
    verbose: bool,
) -> None:
    """Optuna search (TPE, median pruning on val/acc) over --space; the best recipe as an override file."""
    from pathlib import Path

    from clfops.tuning.sweep import SweepSettings, run_sweep

    settings = SweepSettings(
        trials=trials,
        space_file=Path(space),
        overrides=list(overrides),
        study_name=study_name,
        storage=storage,
        jobs=jobs,
        out=Path(out) if out else None,
        prune_startup=prune_startup,
        prune_warmup=prune_warmup,
        verbose=verbose,
    )
    result = run_sweep(settings)
    if result.best_trial is None:
        click.echo(f"study {result.study_name}: no trial completed yet ({result.finished} finished)")
    else:
        click.echo(f"best: trial {result.best_trial}, val/acc {result.best_value:.4f}")
        click.echo(f"run it: {result.command}")
    click.echo(f"wrote {', '.join(str(f) for f in result.files)}")
