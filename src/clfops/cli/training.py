"""Commands around a training run: train, augment-preview, fetch, ui, runs, sync."""

from __future__ import annotations

import sys

import click

from clfops.cli.base import friendly, main


def _train_help() -> str:
    from clfops.config import group_choices

    lines = [
        "Train a classifier. OVERRIDES use Hydra's grammar: key=value, group=choice.",
        "",
        "\b",
        "Config groups (pick one with group=choice):",
    ]
    lines += [f"  {group:<10} {', '.join(choices)}" for group, choices in group_choices().items()]
    lines += [
        "",
        "\b",
        "Examples:",
        "  clfops train",
        "  clfops train model=cnn optimizer=sgd optimizer.lr=0.05 trainer.max_epochs=10",
        "  clfops train data=folder data.root=/path/to/images augment=basic",
        "  clfops train +experiment=mnist_cnn",
        "  clfops train --cfg job          # print the resolved config and exit",
    ]
    return "\n".join(lines)


@main.command(
    help=_train_help(),
    context_settings={"ignore_unknown_options": True, "allow_extra_args": False},
)
@click.option("--cfg", "show_cfg", type=click.Choice(["job"]), help="Print the resolved config and exit.")
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@friendly
def train(show_cfg: str | None, overrides: tuple[str, ...]) -> None:
    from clfops.config import compose, to_yaml

    if "optimizer.lr=auto" in overrides:  # an LR range test first; the choice is recorded as tuning.lr_found
        from clfops.tuning.finders import resolve_lr_auto

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


@main.command("augment-preview")
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
    """Start the MLflow UI on the local store, bound to 127.0.0.1."""
    import subprocess

    from clfops.tracking import client, resolve_uri

    store = resolve_uri(uri)
    client(store)  # creates/migrates the store once, under a lock
    click.echo(f"MLflow UI for {store} at http://127.0.0.1:{port}  (Ctrl-C to stop)")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host", "127.0.0.1"]
    sys.exit(subprocess.call([*cmd, "--port", str(port)]))


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
