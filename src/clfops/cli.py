"""The `clfops` command line: one thin function per command, no ML code, no heavy imports at module level.

`clfops --help` and `clfops train --help` import only click: torch, Lightning and MLflow load inside the
command that needs them. Every user mistake arrives here as an exception whose message is one line; it is
printed as `clfops: error: ...` with exit code 2 (never a traceback).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean 'the user asked for something wrong' (imported only when raised)."""
    from clfops.checkpoint import CheckpointError
    from clfops.config import ConfigError
    from clfops.data import DataError
    from clfops.export import ModelFileError
    from clfops.models import ModelError
    from clfops.tracking import TrackingError

    return (ConfigError, DataError, ModelError, TrackingError, CheckpointError, ModelFileError, ValueError)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user errors into one line + exit 2, Ctrl-C into exit 130."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            click.echo("clfops: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except Exception as err:
            if isinstance(err, _user_errors()):
                message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                click.echo(f"clfops: error: {message}", err=True)
                sys.exit(EXIT_USAGE)
            raise

    return wrapper


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="clfops")
def main() -> None:
    """clfops: train, track, evaluate, promote and serve PyTorch image classifiers."""
    import logging

    logger = logging.getLogger("clfops")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


@main.command(
    help=_train_help(),
    context_settings={"ignore_unknown_options": True, "allow_extra_args": False},
)
@click.option("--cfg", "show_cfg", type=click.Choice(["job"]), help="Print the resolved config and exit.")
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@friendly
def train(show_cfg: str | None, overrides: tuple[str, ...]) -> None:
    from clfops.config import compose, to_yaml

    cfg = compose("train", list(overrides))
    if show_cfg:
        click.echo(to_yaml(cfg), nl=False)
        return
    from clfops.train import train as run_train

    summary = run_train(cfg, list(overrides))
    click.echo(
        f"test accuracy {summary['test_acc']:.4f}  (best val {summary['best_val_acc'] or float('nan'):.4f}, "
        f"{summary['epochs']} epochs, {summary['train_seconds']:.1f}s training)"
    )
    click.echo(f"run dir: {summary['run_dir']}")
    if summary.get("run_id"):
        click.echo(f"MLflow run: {summary['run_id']}  ->  look at it with: clfops ui")


@main.command("augment-preview")
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@click.option("--out", default="augment_preview.png", show_default=True, help="PNG file to write.")
@click.option("-n", "count", default=16, show_default=True, help="Number of images.")
@friendly
def augment_preview(overrides: tuple[str, ...], out: str, count: int) -> None:
    """Write a grid of training images before and after augmentation (same overrides as train)."""
    from clfops.config import compose
    from clfops.preview import write_preview

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


if __name__ == "__main__":
    main()
