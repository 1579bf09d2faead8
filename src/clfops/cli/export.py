"""`clfops export`: a trained model as a portable ONNX file (uint8 images in, class probabilities out)."""

from __future__ import annotations

from pathlib import Path

import click

from clfops.cli.base import STORE_HELP, friendly, main
from clfops.errors import RunFailed, UserError


class ExportError(UserError):
    """Bad export arguments: one line for the user, exit 2."""


@main.command()
@click.argument("model", required=False)
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), help="The file to write (default: model.onnx here).")
@click.option("--run-dir", help="A run directory (uses RUN_DIR/model).")
@click.option("--checkpoint", help="A checkpoint inside a run dir (RUN_DIR/checkpoints/*.ckpt).")
@click.option("--run-id", help="An MLflow run id (its logged model, else its local run dir).")
@click.option("--model-uri", help="models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/model.")
@click.option("--data", default="fashion_mnist", show_default=True, help="Data set whose test split checks the file.")
@click.option("--data-root", help="Where --data lives (default: the data set's usual place).")
@click.option("--tracking-uri", help=STORE_HELP)
@friendly
def export(
    model: str | None,
    fmt: str,
    out: Path | None,
    run_dir: str | None,
    checkpoint: str | None,
    run_id: str | None,
    model_uri: str | None,
    data: str,
    data_root: str | None,
    tracking_uri: str | None,
) -> None:
    """Export MODEL (a run dir, checkpoint, run id or models:/ URI) to ONNX and check it against torch.

    The graph takes uint8 images (N, C, H, W), any N, and holds the preprocessing (scale, normalise, test-time
    flip) and the softmax. Before writing, onnxruntime and torch score the test split of --data (converted to
    the model's channels and size): top-1 must agree on >= 99.9 % of images and probabilities within 1e-4.
    """
    from clfops.data.sources import load_source
    from clfops.safe_files import atomic_write_bytes
    from clfops.serving import onnx_export as E
    from clfops.serving.predict import to_model_batch
    from clfops.serving.resolve import ModelRef, resolve_model

    if model and any((run_dir, checkpoint, run_id, model_uri)):
        raise ExportError("give MODEL or one of --run-dir/--checkpoint/--run-id/--model-uri, not both")
    ref = ModelRef.guess(model) if model else ModelRef.from_options(run_dir, checkpoint, run_id, model_uri)
    target = out or Path("model.onnx")
    if target.suffix.lower() != ".onnx":
        raise ExportError(f"--out {target}: use a file name ending in .onnx")
    if not target.parent.is_dir():
        raise ExportError(f"--out {target}: folder {target.parent} does not exist")
    resolved = resolve_model(ref, tracking_uri)  # the one resolver: same bytes, same model as evaluate/predict
    net, manifest = resolved.net, resolved.manifest
    test = load_source(data, data_root).test.x.numpy()
    size = (manifest.image_size[0], manifest.image_size[1])
    images = to_model_batch(test, manifest.in_channels, size).numpy()
    blob = E.export_bytes(net, manifest)
    check = E.agreement(blob, net, manifest, images)
    click.echo(str(check))
    if not check.ok:
        raise RunFailed(f"{target} not written: the ONNX model disagrees with torch")
    atomic_write_bytes(target, blob)
    click.echo(
        f"wrote {target} ({len(blob) / 1e6:.1f} MB; {len(manifest.classes)} classes, input uint8 "
        f"(N, {manifest.in_channels}, {size[0]}, {size[1]}))"
    )
