"""Commands that run a trained model: evaluate, predict."""

from __future__ import annotations

import sys

import click

from clfops.cli.base import STORE_HELP, friendly, main


@main.command()
@click.option("--run-dir", type=click.Path(path_type=str), help="A run directory (uses RUN_DIR/model).")
@click.option(
    "--checkpoint",
    type=click.Path(path_type=str),
    help="A checkpoint inside a run dir (RUN_DIR/checkpoints/*.ckpt, with the run's model/).",
)
@click.option("--run-id", help="An MLflow run id (its logged model, else its local run dir).")
@click.option("--model-uri", help="runs:/ID/model, models:/NAME@ALIAS, models:/NAME/VERSION or models:/m-ID.")
@click.option(
    "--data", default="test", show_default=True, help="test | val (of the training data) | DATASET | IMAGE_FOLDER."
)
@click.option("--batch-size", default=256, show_default=True)
@click.option("--out", type=click.Path(path_type=str), help="Output folder (default RUN_DIR/eval or ./eval).")
@click.option("--log-mlflow", is_flag=True, help="Log eval/* metrics and the files to the run (or a linked run).")
@click.option("--tracking-uri", help="Tracking store (default: the run's own, else $MLFLOW_TRACKING_URI).")
@click.option("--top-k-grid", "grid", default=16, show_default=True, help="Misclassified examples to show.")
@click.option("--save-predictions", is_flag=True, help="Also write predictions.csv (one row per image).")
@click.option(
    "--precision",
    type=click.Choice(["auto", "32-true", "bf16-mixed"]),
    default="auto",
    show_default=True,
    help="auto: bf16 where the CPU has it natively (as training's precision=auto), else fp32.",
)
@friendly
def evaluate(
    run_dir: str | None,
    checkpoint: str | None,
    run_id: str | None,
    model_uri: str | None,
    data: str,
    batch_size: int,
    out: str | None,
    log_mlflow: bool,
    tracking_uri: str | None,
    grid: int,
    save_predictions: bool,
    precision: str,
) -> None:
    """Evaluate a trained model: classification report, plots, report.html, optionally logged to MLflow."""
    from pathlib import Path

    from clfops.evaluation.evaluate import EvalRequest, print_summary
    from clfops.evaluation.evaluate import evaluate as run_evaluate

    request = EvalRequest(
        run_dir=Path(run_dir) if run_dir else None,
        checkpoint=Path(checkpoint) if checkpoint else None,
        run_id=run_id,
        model_uri=model_uri,
        data=data,
        batch_size=batch_size,
        out=Path(out) if out else None,
        log_mlflow=log_mlflow,
        tracking_uri=tracking_uri,
        grid=grid,
        save_predictions=save_predictions,
        precision=precision,
    )
    print_summary(run_evaluate(request))


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--model-uri", help="runs:/ID/model, models:/NAME@ALIAS, models:/NAME/VERSION or models:/m-ID.")
@click.option("--run-id", help="An MLflow run id (its logged model, else its local run dir).")
@click.option(
    "--checkpoint",
    help="A checkpoint inside a run dir (RUN_DIR/checkpoints/*.ckpt, with the run's model/).",
)
@click.option("--run-dir", help="A run directory (uses RUN_DIR/model).")
@click.option("--top-k", default=3, show_default=True, type=click.IntRange(1, 1000))
@click.option("--out", help="Also write every prediction to a .csv or .json file.")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--tracking-uri", help=STORE_HELP)
@friendly
def predict(
    sources: tuple[str, ...],
    model_uri: str | None,
    run_id: str | None,
    checkpoint: str | None,
    run_dir: str | None,
    top_k: int,
    out: str | None,
    batch_size: int,
    tracking_uri: str | None,
) -> None:
    """Class names and probabilities for SOURCES: image files, folders (recursive) or IDX files (.gz or raw).

    Exits 1 when an image could not be read (each one is named on stderr and skipped).
    """
    from pathlib import Path

    from clfops.serving import predict as P
    from clfops.serving.resolve import ModelRef, resolve_model

    ref = ModelRef.from_options(run_dir, checkpoint, run_id, model_uri)
    if out:
        P.check_out_path(Path(out))
    model = resolve_model(ref, tracking_uri)
    pred = P.predict_sources(model.net, model.manifest, list(sources), batch_size)
    P.print_table(pred, top_k)
    if out:
        P.write_output(pred, Path(out), top_k)
        click.echo(f"wrote {len(pred.names)} predictions to {out}")
    for path, why in pred.failed:
        click.echo(f"clfops: skipped unreadable {path}: {why}", err=True)
    if pred.failed:
        sys.exit(1)
