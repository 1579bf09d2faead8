"""Commands around a training run: train, augment-preview, fetch, ui, runs, sync."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import Any

import click

from clfops.cli.base import friendly, main


def _train_help() -> str:
    from clfops.config import group_choices

    lines = [
        "Train a classifier. OVERRIDES use Hydra's grammar: key=value, group=choice, +experiment=NAME.",
        "",
        "\b",
        "Config groups (pick one with group=choice; --config-dir adds your own):",
    ]
    lines += [f"  {group:<10} {', '.join(choices)}" for group, choices in group_choices([]).items()]
    lines += [
        "",
        "\b",
        "Examples:",
        "  clfops train",
        "  clfops train model=cnn optimizer=sgd optimizer.lr=0.05 trainer.max_epochs=10",
        "  clfops train data=folder data.root=/path/to/images augment=basic",
        "  clfops train +experiment=mnist_cnn",
        "  clfops train --config-dir ./conf +experiment=my   # ./conf/experiment/my.yaml",
        "  clfops train -m optimizer.lr=1e-3,3e-3 model=cnn,quick_cnn   # a grid, one parent MLflow run",
        "  clfops train --cfg job          # print the resolved config and exit",
    ]
    return "\n".join(lines)


def _add_config_dirs(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> None:
    """--config-dir DIR (repeatable): put DIR in front of $CLFOPS_CONFIG_DIR, which every compose (and a
    sweep's worker processes) reads; checked here so a missing folder fails before anything runs."""
    import os

    from clfops.config import CONFIG_ENV, ConfigError, user_config_dirs

    if not value:
        return
    try:
        dirs = user_config_dirs(list(value))
    except ConfigError as err:  # click's usage-error path: one line, exit 2
        raise click.BadParameter(str(err).split(" ", 1)[-1], ctx, param) from None
    os.environ[CONFIG_ENV] = os.pathsep.join(str(d) for d in dirs)


def config_dir_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The --config-dir option of every command that composes a config (train, sweep, compare, finders...)."""
    return click.option(
        "--config-dir",
        multiple=True,
        expose_value=False,
        is_eager=True,
        callback=_add_config_dirs,
        type=click.Path(file_okay=False, path_type=str),
        help="A folder of your own configs (DIR/experiment/NAME.yaml, DIR/model/...), added to the packaged "
        "ones (repeatable; also $CLFOPS_CONFIG_DIR).",
    )(fn)


@main.command(
    help=_train_help(),
    context_settings={"ignore_unknown_options": True, "allow_extra_args": False},
)
@click.option(
    "--cfg",
    "-c",
    "show_cfg",
    type=click.Choice(["job", "all", "hydra"]),
    help="job: print the resolved config and exit (all/hydra: refused, clfops runs no Hydra app).",
)
@click.option("--resolve", is_flag=True, help="Accepted for Hydra users: --cfg job always prints resolved values.")
@click.option("--info", "show_info", is_flag=True, help="Print the config search path and groups, and exit.")
@click.option("-m", "--multirun", is_flag=True, help="Run the grid of k=a,b overrides (one parent MLflow run).")
@config_dir_option
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@friendly
def train(show_cfg: str | None, resolve: bool, show_info: bool, multirun: bool, overrides: tuple[str, ...]) -> None:
    from clfops.config import ConfigError, compose, to_yaml

    if show_cfg in ("all", "hydra"):
        raise ConfigError(f"--cfg {show_cfg}: clfops runs no Hydra app, so there is no hydra config; use --cfg job")
    if show_info:
        _print_info()
        return
    if multirun:
        _multirun(list(overrides), show_cfg)
        return
    if "optimizer.lr=auto" in overrides:  # an LR range test first; the choice is recorded as tuning.lr_found
        from clfops.tuning.lr_find import resolve_lr_auto

        overrides, lr = resolve_lr_auto(list(overrides))
        click.echo(f"optimizer.lr=auto -> {lr:g} (LR range test)")
    cfg = compose("train", list(overrides))
    if show_cfg:
        click.echo(to_yaml(cfg), nl=False)
        return
    from clfops.training.train import train as run_train

    summary = run_train(cfg, list(overrides))
    if "rank" in summary:  # rank > 0 of a multi-process run: rank 0 reports for the job
        return
    click.echo(
        f"test accuracy {summary['test_acc']:.4f}  (best val {summary['best_val_acc'] or float('nan'):.4f}, "
        f"{summary['epochs']} epochs, {summary['train_seconds']:.1f}s training)"
    )
    click.echo(f"run dir: {summary['run_dir']}")
    if summary.get("tracking_offline"):
        click.echo(f"MLflow run {summary['run_id']} is incomplete (server lost): clfops sync {summary['run_dir']}")
    elif summary.get("run_id"):
        click.echo(f"MLflow run: {summary['run_id']}  ->  look at it with: clfops ui")


def _print_info() -> None:
    """`--info`: where configs come from (Hydra's search path, in order) and the groups they give."""
    from clfops.config import PACKAGE, config_dir, group_choices, user_config_dirs

    dirs = user_config_dirs()
    click.echo("config search path (first match wins):")
    click.echo(f"  pkg://{PACKAGE}  ({config_dir()})")
    for d in dirs:
        click.echo(f"  file://{d}")
    click.echo("config groups:")
    for group, choices in group_choices(dirs).items():
        click.echo(f"  {group:<10} {', '.join(choices)}")


def _multirun(overrides: list[str], show_cfg: str | None) -> None:
    """`-m`: Hydra's grid grammar (k=a,b, range(), choice()), run as sequential runs under one parent MLflow run
    by the study runner of `clfops compare`; the comparison table at the end."""
    import time
    from pathlib import Path

    from clfops.config import ConfigError, expand_grid
    from clfops.tuning.compare import grid_variants, run_grid
    from clfops.tuning.report import print_table

    if show_cfg or any(o.startswith("optimizer.lr=auto") for o in overrides):
        raise ConfigError("-m: --cfg and optimizer.lr=auto work on one run; leave out -m")
    jobs = expand_grid(overrides)
    group = f"multirun-{time.strftime('%Y%m%d-%H%M%S')}"
    sweeps = " ".join(o for o in overrides if o not in set.intersection(*(set(j) for j in jobs))) or "-"
    folder = Path("studies") / group
    click.echo(f"{group}: {len(jobs)} runs ({sweeps})")
    curves = run_grid([], group, sweeps, grid_variants(group, jobs), folder, kind="multirun")
    print_table(curves)
    click.echo(f"wrote {folder}/comparison.csv, comparison.md, comparison.png")


@main.command("augment-preview")
@config_dir_option
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@click.option("--out", default="augment_preview.png", show_default=True, help="PNG file to write.")
@click.option("-n", "count", default=16, show_default=True, help="Number of images.")
@friendly
def augment_preview(overrides: tuple[str, ...], out: str, count: int) -> None:
    """Write a grid of training images before and after augmentation (same overrides as train)."""
    from clfops.config import compose
    from clfops.training.preview import write_preview

    path = write_preview(compose("train", list(overrides)), out, count)
    click.echo(f"wrote {path}")


@main.command()
@click.argument("name", type=click.Choice(["fashion_mnist", "mnist", "cifar10"]))
@click.option("--root", default=None, help="Folder to put the files in (default: the data config's).")
@friendly
def fetch(name: str, root: str | None) -> None:
    """Make sure data set NAME is on disk (Debian's copy, or the official download, sha256-checked)."""
    from pathlib import Path

    from clfops.data.download import ensure
    from clfops.data.sources import default_root

    folder = ensure(name, Path(root) if root else default_root(name))
    click.echo(f"{name}: {folder}")


@main.command()
@click.option("--port", default=5000, show_default=True)
@click.option("--uri", default=None, help="Tracking store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db).")
@friendly
def ui(port: int, uri: str | None) -> None:
    """Start the MLflow UI on the local store, bound to 127.0.0.1; Ctrl-C or SIGTERM stops all of it.

    In MLflow's runs table, "Columns" picks what to compare (test/acc, best val/acc, model.name, optimizer.lr,
    trainer.max_epochs, data.name): the UI keeps that choice per browser; a server cannot preset it.
    """
    from clfops.tracking import client, resolve_uri

    store = resolve_uri(uri)
    c = client(store)  # creates/migrates the store once, under a lock
    click.echo(f"MLflow UI for {store} at {ui_url(c, port)}  (Ctrl-C to stop)")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host", "127.0.0.1"]
    sys.exit(run_process_group([*cmd, "--port", str(port)]))


def ui_url(c: Any, port: int) -> str:
    """The runs table of the experiment used last. `workflowType=machine_learning`: MLflow 3.17's UI otherwise
    opens in its GenAI mode (traces overview) whatever the experiment's `mlflow.experimentKind` tag says; the
    UI keeps the parameter while one moves between an experiment's pages."""
    base = f"http://127.0.0.1:{port}/#/experiments"
    ids = [e.experiment_id for e in c.search_experiments()]
    latest = c.search_runs(ids, max_results=1, order_by=["attributes.start_time DESC"]) if ids else []
    return f"{base}/{latest[0].info.experiment_id}/runs?workflowType=machine_learning" if latest else base


def run_process_group(cmd: list[str], grace_s: float = 5.0) -> int:
    """Run `cmd` in its own process group and pass SIGINT/SIGTERM to the whole group: `mlflow ui` starts
    uvicorn and huey workers, and signalling only its pid (what killing `clfops ui` used to reach, if anything)
    left them serving the port. Returns the exit code, 0 when stopped by a forwarded signal."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, start_new_session=True)  # its own group: os.killpg reaches its workers
    stopped: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        stopped.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    code = proc.wait()
    deadline = time.monotonic() + grace_s  # workers that outlive their parent: wait for them, then SIGKILL
    with contextlib.suppress(ProcessLookupError):  # the group is gone: every worker has exited
        while time.monotonic() < deadline:
            os.killpg(proc.pid, 0)
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)  # (an exited worker no init reaps still counts: a no-op for it)
    return 0 if stopped else code


@main.command("runs")
@click.option("--root", default="runs", show_default=True, help="Where the run dirs are (run.root).")
@friendly
def list_runs(root: str) -> None:
    """List local run dirs: status, epochs done, best val/acc; what `resume=` can continue."""
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from clfops.tracking.rundirs import list_runs as find_runs

    table = Table("run", "status", "epochs", "best val/acc", "test/acc", "resume with")
    for run in find_runs(Path(root)):
        best = f"{run['best_val_acc']:.4f}" if run["best_val_acc"] is not None else "-"
        test = f"{run['test_acc']:.4f}" if run["test_acc"] is not None else "-"
        hint = f"clfops train resume={run['path']}" if run["resumable"] else ""
        table.add_row(run["name"], run["status"], str(run["epochs"]), best, test, hint)
    Console().print(table)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=str))
@click.option("--uri", default=None, help="Tracking store (default: the run's own, from run.json).")
@friendly
def sync(run_dir: str, uri: str | None) -> None:
    """Upload RUN_DIR to MLflow: metrics it lacks, files, final status (after a lost server)."""
    from pathlib import Path

    from clfops.tracking.sync import sync as run_sync

    result = run_sync(Path(run_dir), uri)
    what = "new run" if result.created else "run"
    click.echo(f"synced {run_dir} -> {what} {result.run_id}: {result.points_sent} metric points, {result.status}")


# ---- tuning and studies (issue 9): lr-find, batch-size-find, compare, sweep ----
