"""`clfops data pack`: turn a data set or an image folder into shards for `data=stream`."""

from __future__ import annotations

import click

from clfops.cli.base import friendly, main


@main.group()
def data() -> None:
    """Data sets: pack one into shards that stream from disk or S3."""


@data.command(
    help="Pack SRC (fashion_mnist, mnist, cifar10 or an image folder root/<class>/*.png) into train/val/test "
    "shards + clfops.json at DEST (an empty local folder or s3://bucket/prefix); train on them with "
    "`clfops train data=stream data.root=DEST`. S3: $AWS_ENDPOINT_URL (or $MLFLOW_S3_ENDPOINT_URL) and "
    "$AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY. Defaults come from clfops/configs/data/stream.yaml and train.yaml."
)
@click.argument("src")
@click.argument("dest")
@click.option("--name", help="Data set name in the index (MLflow experiment); default: SRC's name.")
@click.option("--val-fraction", type=float, help="Validation cut of the training set (default: data.val_fraction).")
@click.option("--seed", type=int, help="Seed of the validation cut and the shard order (default: seed).")
@click.option("--chunk-bytes", help="Shard size, e.g. 64MB (default: data.chunk_bytes).")
@friendly
def pack(
    src: str, dest: str, name: str | None, val_fraction: float | None, seed: int | None, chunk_bytes: str | None
) -> None:
    from clfops.config import compose
    from clfops.data.pack import pack as pack_shards
    from clfops.data.stream import S3Options

    defaults = compose("train", ["data=stream", "data.root=unused"])  # only for the defaults it holds
    index = pack_shards(
        src,
        dest,
        val_fraction=defaults.data.val_fraction if val_fraction is None else val_fraction,
        seed=defaults.seed if seed is None else seed,
        chunk_bytes=chunk_bytes or defaults.data.chunk_bytes,
        s3=S3Options.from_env(defaults.data.s3.endpoint_url, defaults.data.s3.region),
        name=name,
    )
    counts = ", ".join(f"{k} {v}" for k, v in index.counts.items())
    classes = len(index.classes)
    click.echo(f"packed {index.name} to {dest}: {counts} images, {classes} classes, sha256 {index.sha256[:12]}")
