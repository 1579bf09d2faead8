"""End-to-end `clfops train` on a few hundred real Fashion-MNIST images: files, summary, MLflow, determinism."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from clfops.data.loader import make_splits, train_loader
from clfops.data.sources import load_source
from clfops.hardware import device_name
from clfops.serving.saved_model import load_model
from clfops.tracking.rundirs import read_metrics
from clfops.training.train import train
from conftest import RUN_FILES, run_cli
from test_model_logging import normalised

pytestmark = pytest.mark.slow  # every test trains a run (5-60 s each on 2 cores)


def test_train_writes_run_dir_and_summary(compose, store: str, tmp_path: Path) -> None:
    cfg = compose("run.name=e2e", "trainer.max_epochs=2")
    summary = train(cfg, ["run.name=e2e"])
    run_dir = Path(summary["run_dir"])
    assert run_dir.name == "e2e"
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk == summary  # the file holds exactly what train() returns
    assert summary["model_uri"].startswith("models:/") and "tracking_offline" not in summary
    assert summary["timings"]["total_in_process"] >= summary["total_seconds"] >= summary["train_seconds"] > 0
    assert 0.3 < summary["test_acc"] <= 1.0  # 2 epochs on 480 images: well above chance (0.1)
    assert summary["epochs"] == 2 and summary["images"] == {"train": 480, "val": 120, "test": 2000}
    assert (run_dir / "checkpoints" / "best.ckpt").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    epochs = [r for r in rows if r.get("val/acc")]
    assert [int(r["epoch"]) for r in epochs] == [0, 1]
    assert json.loads((run_dir / "status.json").read_text())["status"] == "FINISHED"
    # Where it trained (tests/test_cuda.py: the GPU): trainer.accelerator=auto takes a GPU wherever one is visible.
    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert summary["hardware"] == {
        "device": device,
        "device_name": device_name(torch.device(device)),
        "precision": "32-true",  # TINY's
        "distributed_backend": None,  # one process
    }

    run = MlflowClient(store).get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert (run.data.params["device.resolved"], run.data.params["precision.resolved"]) == (device, "32-true")
    assert run.data.params["optimizer.lr"] == "0.003" and run.data.params["model.name"] == "quick_cnn"
    assert run.data.params["data.sha256"] == summary["data_sha256"]
    assert abs(run.data.metrics["test/acc"] - summary["test_acc"]) < 1e-9
    history = MlflowClient(store).get_metric_history(summary["run_id"], "val/acc")
    assert len(history) == 2
    logged = MlflowClient(store).download_artifacts(summary["run_id"], "summary.json", str(tmp_path))
    assert json.loads(Path(logged).read_text()) == on_disk  # written once, before it was logged


def test_same_seed_same_metrics(compose) -> None:
    a = train(compose("run.name=a", "deterministic=true"))
    b = train(compose("run.name=b", "deterministic=true"))
    assert a["test_acc"] == b["test_acc"] and a["test_loss"] == b["test_loss"]
    timing = {"time", "epoch_seconds", "throughput_img_s"}

    def values(run_dir: str) -> list[dict[str, str]]:
        rows = csv.DictReader((Path(run_dir) / "metrics.csv").open())
        return [{k: v for k, v in row.items() if k not in timing} for row in rows]

    assert values(a["run_dir"]) and values(a["run_dir"]) == values(b["run_dir"])


def test_cli_train_end_to_end(tmp_path: Path) -> None:
    proc = run_cli(
        "train",
        "data.train_limit=400",
        "data.batch_size=64",
        "trainer.max_epochs=1",
        "run.name=cli",
        f"run.root={tmp_path / 'runs'}",
        "trainer.precision=32-true",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "test accuracy" in proc.stdout and str(tmp_path / "runs" / "cli") in proc.stdout
    assert (tmp_path / "mlflow.db").is_file()  # the default local store, in the working directory


def lrs(run_dir: str) -> list[float]:
    return [float(r["lr"]) for r in csv.DictReader((Path(run_dir) / "metrics.csv").open()) if r.get("lr")]


def test_step_schedule_decays_per_epoch(compose) -> None:
    summary = train(
        compose(
            "scheduler=step",
            "scheduler.step_size=1",
            "scheduler.gamma=0.1",
            "trainer.max_epochs=2",
            "optimizer=sgd",
            "optimizer.lr=0.05",
        )
    )
    assert lrs(summary["run_dir"]) == pytest.approx([0.005, 0.0005])  # lr at the end of epochs 1, 2


def test_cosine_with_warmup_rises_then_falls(compose) -> None:
    summary = train(compose("scheduler=cosine", "scheduler.warmup_epochs=1", "trainer.max_epochs=3"))
    lr = lrs(summary["run_dir"])
    assert lr[0] == pytest.approx(0.003) and lr[1] < lr[0] and lr[2] < lr[1]  # warm after epoch 1, then down


def test_early_stopping_stops_before_max_epochs(compose) -> None:
    # "improvement" of val/loss in max mode never happens while the model learns: stop after patience+1 epochs
    summary = train(
        compose(
            "trainer.early_stopping.enabled=true",
            "trainer.early_stopping.monitor=val/loss",
            "trainer.early_stopping.mode=max",
            "trainer.early_stopping.patience=0",
            "trainer.max_epochs=4",
        )
    )
    assert summary["epochs"] == 2


def test_swa_averages_weights_and_still_tests(compose) -> None:
    summary = train(compose("trainer.swa.enabled=true", "trainer.swa.epoch_start=0.5", "trainer.max_epochs=2"))
    assert 0.3 < summary["test_acc"] <= 1.0
    assert (Path(summary["run_dir"]) / "model" / "model.safetensors").is_file()


def test_train_acc_is_the_share_of_training_images_predicted_right(compose) -> None:
    """With lr 0 the weights never move, so every training batch's predictions can be recomputed afterwards
    (BatchNorm in training mode uses each batch's own statistics, as in the step)."""
    cfg = compose("run.name=still", "optimizer.lr=0", "scheduler=none", "augment=none", "tracking.enabled=false")
    summary = train(cfg)
    logged = [r["train/acc"] for r in read_metrics(Path(summary["run_dir"]) / "metrics.csv") if "train/acc" in r]
    net, manifest = load_model(Path(summary["model_dir"]))
    splits = make_splits(load_source("fashion_mnist", None), cfg.data.val_fraction, cfg.seed, cfg.data.train_limit)
    loader = train_loader(splits.train, cfg.data.batch_size, cfg.seed)
    loader.sampler.set_epoch(0)
    correct = seen = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((net.train()(normalised(x, manifest)).argmax(1) == y).sum())
            seen += len(y)
    assert seen == 448  # 480 training images, 7 full batches of 64 (the ragged last one is dropped)
    assert len(logged) == 1 and logged[0] == pytest.approx(correct / seen, abs=1e-6)  # float32; one image: 2e-3
