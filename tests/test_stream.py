"""`data=stream`: `clfops data pack` of a small image folder, then 1 epoch from the shards, locally and from S3
(SeaweedFS on loopback), through the same `train(cfg)` as every run; pack's one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from clfops.data import DataError
from clfops.data.pack import pack
from clfops.data.stream import S3Options
from clfops.training.train import train
from conftest import run_cli

CLASSES = ("bright", "dark", "stripes")
PER_CLASS = 16  # 48 images: 9 test (3 a class, the folder carve), 8 val, 31 train


def write_image_folder(root: Path, per_class: int) -> Path:
    """root/<class>/*.png, 12x12 grey: three classes (bright, dark, stripes) a tiny model tells apart quickly."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir()
        for i in range(per_class):
            noise = rng.integers(0, 40, size=(12, 12))
            pixels = {0: 200 + noise, 1: noise, 2: np.tile([0, 230], 6)[None, :] + noise}[label]
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("images"), PER_CLASS)


def _overrides(root: str) -> list[str]:
    return [
        "data=stream",
        f"data.root={root}",
        "data.batch_size=8",
        "data.eval_batch_size=16",
        "model=mlp",
        "model.args.hidden=32",
        "trainer.max_epochs=1",
        "trainer.precision=32-true",
        "logging.progress=none",
        "tracking.log_model=false",  # the pyfunc model (~seconds) is the same code as in-memory runs
    ]


def _check_run(summary: dict, store: str) -> None:
    assert summary["images"] == {"train": 31, "val": 8, "test": 9}
    assert summary["classes"] == list(CLASSES) and 0.0 <= summary["test_acc"] <= 1.0
    run = MlflowClient(store).get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert {"train/acc", "val/acc", "test/acc"} <= set(run.data.metrics)
    assert abs(run.data.metrics["test/acc"] - summary["test_acc"]) < 1e-9
    assert run.data.params["data.sha256"] == summary["data_sha256"]
    ckpt = torch.load(summary["best_checkpoint"], map_location="cpu", weights_only=True)
    loader_state = ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]  # litdata's, for resume
    assert loader_state["current_epoch"] == 1 and loader_state["num_samples_yielded"] == 24  # 3 batches of 8


@pytest.mark.slow
def test_pack_and_train_from_local_shards(tmp_path: Path, image_folder: Path, compose, store: str) -> None:
    dest = tmp_path / "shards"
    index = pack(str(image_folder), str(dest), 0.2, 0, "1MB", S3Options.from_env(), "toy")
    meta = json.loads((dest / "clfops.json").read_text())
    assert meta["classes"] == list(CLASSES) and meta["counts"] == {"train": 31, "val": 8, "test": 9}
    assert meta["channels"] == 1 and meta["size"] == [12, 12] and meta["sha256"] == index.sha256
    assert all((dest / split / "index.json").is_file() for split in ("train", "val", "test"))

    summary = train(compose(*_overrides(str(dest)), tiny=False))
    _check_run(summary, store)
    run = MlflowClient(store).get_run(summary["run_id"])
    assert json.loads(run.data.params["data.mean"].replace("'", '"')) == meta["mean"]  # from the index

    with pytest.raises(DataError, match="not an empty folder"):
        pack(str(image_folder), str(dest), 0.2, 0, "1MB", S3Options.from_env(), None)


@pytest.mark.slow
def test_pack_and_train_from_s3(
    tmp_path: Path, image_folder: Path, compose, store: str, seaweed: dict[str, str], monkeypatch
) -> None:
    for key, value in seaweed.items():
        monkeypatch.setenv(key, value)  # keys + MLFLOW_S3_ENDPOINT_URL: the endpoint comes from the env
    monkeypatch.chdir(tmp_path)  # the chunk cache (data/stream_cache) lands in tmp
    pack(str(image_folder), "s3://mlflow/toy", 0.2, 0, "1MB", S3Options.from_env(), None)
    summary = train(compose(*_overrides("s3://mlflow/toy"), tiny=False))
    _check_run(summary, store)
    assert any((tmp_path / "data" / "stream_cache").rglob("chunk-*.bin"))  # streamed through the cache


def test_pack_cli_errors_are_one_line(tmp_path: Path) -> None:
    missing = run_cli("data", "pack", str(tmp_path / "nope"), str(tmp_path / "out"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1, missing.stderr
    assert "not a data set" in missing.stderr and "nor an image folder" in missing.stderr
    bad_dest = run_cli("data", "pack", "fashion_mnist", "gs://bucket/x")
    assert bad_dest.returncode == 2 and bad_dest.stderr.count("\n") == 1, bad_dest.stderr
    assert "only a local folder or s3://bucket/prefix" in bad_dest.stderr


@pytest.mark.slow
def test_stream_resume_continues_exactly(tmp_path: Path, image_folder: Path, compose) -> None:
    """1 epoch, then resume to 2 == 2 epochs straight: litdata's loader state travels in the checkpoint
    (a constant LR, so the shorter first run trains exactly like the first epoch of the longer one)."""
    from clfops import config as C
    from clfops.tracking.rundirs import read_metrics

    dest = tmp_path / "shards"
    pack(str(image_folder), str(dest), 0.2, 0, "1MB", S3Options.from_env(), None)
    base = [*_overrides(str(dest)), "scheduler=none", "checkpoint.every_n_epochs=0"]
    straight = train(compose(*base, "trainer.max_epochs=2", "run.name=straight", tiny=False))
    first = train(compose(*base, "run.name=first", tiny=False))
    more = [f"resume={first['run_dir']}", "trainer.max_epochs=2"]
    resumed = train(C.compose("train", more), more)
    assert resumed["run_id"] == first["run_id"] and resumed["epochs"] == straight["epochs"] == 2

    def epochs(summary: dict) -> list[tuple]:
        rows = read_metrics(Path(summary["run_dir"]) / "metrics.csv")
        return [(r["epoch"], r["train/loss"], r["val/loss"]) for r in rows if "val/loss" in r]

    assert len(epochs(straight)) == 2 and epochs(resumed) == epochs(straight)
    assert resumed["test_acc"] == straight["test_acc"] and resumed["test_loss"] == straight["test_loss"]
