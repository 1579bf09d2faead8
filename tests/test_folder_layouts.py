"""Image-folder layouts as users lay them out on disk: train/ + val/ (test/ optional), root/<class>, and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from clfops.data import DataError
from clfops.data.folder import read_folder
from clfops.data.loader import make_splits
from conftest import run_cli

PER_SPLIT = {"train": 12, "val": 4, "test": 3}  # images per class


@pytest.fixture(scope="module")
def fashion() -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    from clfops.data.sources import load_source

    source = load_source("fashion_mnist", None)
    return source.train.x, source.train.y, [c.replace("/", "_") for c in source.classes]


def write_pngs(root: Path, splits: tuple[str, ...], fashion) -> dict[str, int]:
    """root/<split>/<class>/<i>.png from real Fashion-MNIST images (distinct images per split); counts per split."""
    x, y, classes = fashion
    counts = {}
    for label, name in enumerate(classes):
        picked = torch.nonzero(y == label).flatten().tolist()
        for split in splits:
            take, picked = picked[: PER_SPLIT[split]], picked[PER_SPLIT[split] :]
            (root / split / name).mkdir(parents=True)
            for i in take:
                Image.fromarray(x[i, 0].numpy()).save(root / split / name / f"{i}.png")
            counts[split] = counts.get(split, 0) + len(take)
    return counts


def test_train_val_test_folders_are_used_as_given(tmp_path: Path, fashion) -> None:
    counts = write_pngs(tmp_path / "ds", ("train", "val", "test"), fashion)
    source = read_folder(tmp_path / "ds").source
    assert source.test_split == "test" and source.val is not None
    assert (len(source.train), len(source.val), len(source.test)) == (counts["train"], counts["val"], counts["test"])
    splits = make_splits(source, val_fraction=0.5, seed=0, train_limit=None)  # val/ given: nothing carved
    assert (len(splits.train), len(splits.val), splits.test_split) == (counts["train"], counts["val"], "test")
    again = read_folder(tmp_path / "ds")  # the cache keeps the val split and which split tests
    assert again.cache_hit and again.source.val is not None and len(again.source.val) == counts["val"]
    assert again.source.sha256 == source.sha256


def test_train_val_without_test_trains_and_says_where_test_metrics_come_from(tmp_path: Path, fashion) -> None:
    counts = write_pngs(tmp_path / "ds", ("train", "val"), fashion)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["data=folder", f"data.root={tmp_path / 'ds'}", f"run.root={tmp_path / 'runs'}", "run.name=r"]
    args += [f"tracking.uri={store}", "data.batch_size=32", "trainer.max_epochs=1", "logging.progress=none"]
    result = run_cli("train", *args, "trainer.precision=32-true", "tracking.log_model=false")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "runs" / "r" / "summary.json").read_text())
    assert summary["test_split"] == "val" and summary["images"]["test"] == counts["val"] == summary["images"]["val"]
    cached = read_folder(tmp_path / "ds")  # the run's cache entry: val stands in for test, also when read back
    assert cached.cache_hit and cached.source.test_split == "val" and cached.source.val is not None
    assert torch.equal(cached.source.val.x, cached.source.test.x) and len(cached.source.test) == counts["val"]
    run = MlflowClient(store).get_run(summary["run_id"])
    assert run.data.params["data.test_split"] == "val"
    html = (tmp_path / "runs" / "r" / "eval" / "report.html").read_text()
    assert "ds val (the data has no test split: test metrics come from val)" in html


def test_flat_folder_still_carves_its_test_split(tmp_path: Path, fashion) -> None:
    write_pngs(tmp_path / "flat", ("train",), fashion)
    for class_dir in (tmp_path / "flat" / "train").iterdir():
        class_dir.rename(tmp_path / "flat" / class_dir.name)
    (tmp_path / "flat" / "train").rmdir()
    source = read_folder(tmp_path / "flat", test_fraction=0.25).source
    assert source.val is None and source.test_split == "test" and len(source.test) == 30  # 3 of 12 per class


@pytest.mark.parametrize(
    ("splits", "found"),
    [
        (("train",), "has a train/ folder but neither val/ nor test/"),
        (("val",), "has a val/ folder but no train/ folder"),
        (("test",), "has a test/ folder but no train/ folder"),
    ],
)
def test_other_layouts_get_one_line_listing_the_accepted_ones(
    tmp_path: Path, fashion, splits: tuple[str, ...], found: str
) -> None:
    root = tmp_path / "ds"
    write_pngs(root, splits, fashion)
    with pytest.raises(DataError, match=found):
        read_folder(root)
    result = run_cli(
        "train", "data=folder", f"data.root={root}", f"run.root={tmp_path / 'runs'}", "tracking.enabled=false"
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    line = result.stderr.strip()
    assert found in line and "accepted layouts: root/<class>/<image>" in line and "root/val/<class>/" in line
    assert not (tmp_path / "runs").exists()  # refused before a run dir exists
