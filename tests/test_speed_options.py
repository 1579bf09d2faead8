"""Speed options of the default recipe: the decoded-IDX cache, EMA of weights, summary timings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from clfops.data import idx as idx_module
from clfops.data.idx import FASHION_MNIST_CLASSES, load_idx_dataset
from clfops.training.train import train
from conftest import run_cli
from test_data_readers import make_idx_dataset, write_idx


def test_idx_cache_hit_then_invalidated_by_new_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, cache = tmp_path / "fm", tmp_path / "cache"
    root.mkdir()
    make_idx_dataset(root)
    first = load_idx_dataset("fashion_mnist", root, FASHION_MNIST_CLASSES, cache)
    assert sorted(p.suffix for p in cache.iterdir()) == [".json", ".safetensors"]

    def no_decode(*args: object) -> None:
        raise AssertionError("decoded although the cache should have been used")

    with monkeypatch.context() as patch:
        patch.setattr(idx_module, "_read_split", no_decode)
        second = load_idx_dataset("fashion_mnist", root, FASHION_MNIST_CLASSES, cache)
    assert second.sha256 == first.sha256
    assert torch.equal(second.train.x, first.train.x) and torch.equal(second.test.y, first.test.y)

    # New file contents (other labels) must never be served from the old entry.
    write_idx(root / "train-labels-idx1-ubyte", (first.train.y.numpy() + 1) % 10)
    third = load_idx_dataset("fashion_mnist", root, FASHION_MNIST_CLASSES, cache)
    assert third.sha256 != first.sha256
    assert np.array_equal(third.train.y.numpy(), (first.train.y.numpy() + 1) % 10)


@pytest.mark.slow
def test_ema_weights_are_validated_tested_and_logged(compose) -> None:
    cfg = compose("run.name=ema", "trainer.ema.enabled=true", "trainer.ema.decay=0.9")
    summary = train(cfg)
    ckpt = torch.load(Path(summary["run_dir"]) / "checkpoints" / "best.ckpt", weights_only=True)
    ema, raw = ckpt["state_dict"], ckpt["current_model_state"]  # Lightning keeps the raw weights aside
    key = "net.classifier.5.weight"  # quick_cnn's last linear layer
    assert not torch.equal(ema[key], raw[key])  # the average differs from the last step's weights
    logged = load_file(str(Path(summary["model_dir"]) / "model.safetensors"))
    assert torch.equal(logged[key.removeprefix("net.")], ema[key])  # the tested/logged model is the EMA
    timings = json.loads((Path(summary["run_dir"]) / "summary.json").read_text())["timings"]
    for stage in ("data", "tracking_start", "train", "validation", "test", "pictures", "model_log"):
        assert timings[stage] is not None and timings[stage] >= 0, stage
    assert timings["train"] > 0 and timings["test"] > 0


def test_ema_with_swa_is_refused_in_one_line(tmp_path: Path) -> None:
    proc = run_cli(
        "train",
        "trainer.ema.enabled=true",
        "trainer.swa.enabled=true",
        f"run.root={tmp_path / 'runs'}",
        "tracking.enabled=false",
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    message = "clfops: error: trainer.ema and trainer.swa both average weights: enable only one of them"
    assert proc.stderr.strip().splitlines()[-1] == message


def test_new_sqlite_store_from_template_is_a_normal_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from clfops.tracking import client

    monkeypatch.setenv("CLFOPS_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("first", "second"):  # the first builds the template with MLflow, the second is a copy
        work = tmp_path / name
        work.mkdir()
        monkeypatch.chdir(work)
        c = client(f"sqlite:///{work / 'mlflow.db'}")  # MLflow caches stores by URI: one per dir
        [default] = c.search_experiments()
        # Default is created where the store is used, not where the template was built.
        assert (default.experiment_id, default.name) == ("0", "Default")
        assert Path(default.artifact_location.removeprefix("file://")).parent == work / "mlruns"
        run = c.create_run(c.create_experiment("fm"))
        c.log_metric(run.info.run_id, "val/acc", 0.5)
        assert c.get_run(run.info.run_id).data.metrics == {"val/acc": 0.5}
    assert [p.name for p in (tmp_path / "cache").glob("mlflow-*-empty-store.db")]
