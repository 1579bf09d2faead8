"""Commands on the model registry: register, promote, models."""

from __future__ import annotations

import sys

import click

from clfops.cli.base import STORE_HELP, friendly, main


@main.command()
@click.option("--run-id", required=True, help="The MLflow run whose logged model becomes a version.")
@click.option("--name", required=True, help="Registered model name (created when missing).")
@click.option(
    "--flavor",
    type=click.Choice(["pyfunc", "onnx"]),
    default="pyfunc",
    show_default=True,
    help="pyfunc: the torch model; onnx: the torch-free ONNX model. One flavor per registered model.",
)
@click.option("--tracking-uri", help=STORE_HELP)
@friendly
def register(run_id: str, name: str, flavor: str, tracking_uri: str | None) -> None:
    """Register a run's model as a new version of NAME (tags: test_acc, data_sha256, git_commit, clfops.flavor)."""
    from clfops.registry.register import register as register_version

    mv = register_version(tracking_uri, run_id, name, flavor)
    click.echo(f"registered {name} version {mv.version} ({flavor}) from run {run_id}: models:/{name}/{mv.version}")


@main.command()
@click.option("--name", required=True, help="Registered model name.")
@click.option("--version", "version", help="The version to promote (or --run-id).")
@click.option("--run-id", help="Promote the latest version registered from this run.")
@click.option("--alias", required=True, help="Any alias name MLflow accepts, e.g. staging, production, champion.")
@click.option("--gate", "gates", multiple=True, help="METRIC(>=|<=|>|<|==)NUMBER, e.g. 'eval/acc>=0.90'.")
@click.option("--force", is_flag=True, help="Promote to production without holding staging first.")
@click.option("--compare-to", metavar="ALIAS", help="Also beat the version holding this alias (any alias).")
@click.option("--tracking-uri", help=STORE_HELP)
@friendly
def promote(
    name: str,
    version: str | None,
    run_id: str | None,
    alias: str,
    gates: tuple[str, ...],
    force: bool,
    compare_to: str | None,
    tracking_uri: str | None,
) -> None:
    """Move ALIAS to a version if every gate holds; exit 0 promoted, 1 a gate failed, 2 usage error.

    Gates read the version's run metrics; eval/* falls back to the test/* metric training logged
    (eval/acc <- test/acc) until `clfops evaluate --run-id ID --log-mlflow` has run.
    """
    from clfops.registry.promote import promote as promote_version

    decision = promote_version(tracking_uri, name, alias, version, run_id, list(gates), force, compare_to)
    for ok, text in decision.checks:
        click.echo(f"  {'pass' if ok else 'FAIL'}  {text}")
    if not decision.promoted:
        click.echo(f"not promoted: {name} v{decision.version} -> @{alias} refused ({decision.reason})", err=True)
        sys.exit(1)
    was = f" (was v{decision.previous})" if decision.previous else ""
    click.echo(f"promoted {name} v{decision.version} -> @{alias}{was}: models:/{name}@{alias}")


@main.command()
@click.argument("name")
@click.option("--tracking-uri", help=STORE_HELP)
@friendly
def models(name: str, tracking_uri: str | None) -> None:
    """List the versions of registered model NAME: aliases, run, key metrics, promotion decisions."""
    from rich.console import Console
    from rich.table import Table

    from clfops.registry.promote import model_rows

    rows = model_rows(tracking_uri, name)
    caption = "(test): the test/* metric of training; `clfops evaluate --run-id ID --log-mlflow` logs eval/*"
    table = Table(*rows[0].keys(), title=f"registered model {name}", caption=caption)
    for row in rows:
        table.add_row(*row.values())
    Console(width=None if sys.stdout.isatty() else 120).print(table)  # CI logs: no truncated cells
