"""Tracking: what every run logs, read back through MlflowClient; statuses that never lie; many runs at once."""

from __future__ import annotations

import csv
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from clfops.tracking import TrackingError
from clfops.training.train import train
from conftest import RUN_FILES, TINY, run_cli


@pytest.mark.slow
def test_run_logs_params_tags_metrics_and_artifacts(compose, store: str) -> None:
    summary = train(compose("run.name=logged", "logging.tensorboard=true", "tracking.log_every_n_steps=2"))
    client = MlflowClient(store)
    run = client.get_run(summary["run_id"])
    params, tags = run.data.params, run.data.tags
    for key in (
        "optimizer.lr",
        "model.name",
        "data.sha256",
        "model.parameters",
        "seed",
        "version.torch",
        "version.mlflow",
    ):
        assert key in params, key
    # quick_cnn, the default (3 convs, fc), at the width and fc size of this machine's recipe (config/recipe.py)
    assert params["recipe"] == summary["recipe"] in ("fp32", "bf16")
    assert params["model.parameters"] == {"bf16": "458730", "fp32": "636498"}[summary["recipe"]]
    assert tags["mlflow.runName"] == "logged" and "clfops.command" in tags and "host" in tags
    assert run.data.tags["clfops.run_dir"] == summary["run_dir"]
    for key in (
        "train/acc",
        "val/loss",
        "val/acc",
        "val/precision",
        "val/recall",
        "val/f1",
        "lr",
        "epoch_seconds",
        "throughput_img_s",
        "overfit_gap",
        "test/acc",
        "test/f1",
    ):
        assert key in run.data.metrics, key
    steps = [m.step for m in client.get_metric_history(summary["run_id"], "train/loss_step")]
    assert steps == [1, 3, 5]  # 7 steps of 64 images (480 train); every 2nd step (the 2nd, 4th, 6th)
    artifacts = {a.path for a in client.list_artifacts(summary["run_id"])}
    assert set(RUN_FILES) <= artifacts, artifacts
    assert list((Path(summary["run_dir"]) / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_tracking_disabled_still_writes_the_run_dir(compose, tmp_path: Path) -> None:
    summary = train(compose("tracking.enabled=false", "run.name=offline"))
    assert summary["run_id"] is None
    assert (Path(summary["run_dir"]) / "metrics.csv").is_file()
    assert not (tmp_path / "mlflow.db").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_fails_fast_with_one_line(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    proc = run_cli("train", *TINY, f"tracking.uri={uri}", f"run.root={tmp_path}", cwd=tmp_path)
    assert time.monotonic() - t0 < 60  # MLflow's own retries would wait minutes
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("clfops: error: tracking server") and uri in line and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_unreachable_server_raises_tracking_error(compose) -> None:
    with pytest.raises(TrackingError, match="unreachable"):
        train(compose(f"tracking.uri=http://127.0.0.1:{free_port()}", "tracking.connect_timeout_s=2"))


def run_id_of(run_dir: Path, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while not (run_dir / "run.json").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return json.loads((run_dir / "run.json").read_text())["run_id"]


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_signal_ends_run_killed(tmp_path: Path, sig: int, code: int) -> None:
    store = f"sqlite:///{tmp_path}/m.db"
    args = [
        "data.train_limit=20000",
        "data.batch_size=64",
        "trainer.max_epochs=5",
        f"tracking.uri={store}",
        f"run.root={tmp_path}/runs",
        "run.name=sig",
        "trainer.precision=32-true",
    ]
    proc = subprocess.Popen([sys.executable, "-m", "clfops.cli", "train", *args], stderr=subprocess.PIPE, text=True)
    run_id = run_id_of(tmp_path / "runs" / "sig")
    time.sleep(3)  # into training
    assert proc.poll() is None
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == code
    assert MlflowClient(store).get_run(run_id).info.status == "KILLED"
    assert json.loads((tmp_path / "runs" / "sig" / "status.json").read_text())["status"] == "KILLED"
    assert (tmp_path / "runs" / "sig" / "checkpoints" / "last.ckpt").is_file()  # the point to resume from


@pytest.mark.slow
def test_exception_in_training_ends_run_failed_with_the_message(compose, store: str, monkeypatch) -> None:
    import clfops.training.module

    def broken(self, batch, batch_idx):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(clfops.training.module.Classifier, "training_step", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        train(compose("run.name=broken"))
    run = MlflowClient(store).search_runs([MlflowClient(store).get_experiment_by_name("fashion_mnist").experiment_id])[
        0
    ]
    assert run.info.status == "FAILED" and "disk on fire" in run.data.tags["error"]


@pytest.mark.multiprocess
def test_eight_concurrent_runs_on_a_new_store_all_finish_with_every_point(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/fresh.db"  # does not exist yet: 8 processes race to create it
    args = [
        "data.train_limit=300",
        "data.val_fraction=0.2",  # 240 training images: 3 steps of 64 an epoch
        "data.test_limit=100",  # 8 x the full 10k test set would dominate the test
        "tracking.log_model=false",  # points, not the model, are what this test counts
        "data.batch_size=64",
        "trainer.max_epochs=2",
        "tracking.log_every_n_steps=1",
        "trainer.precision=32-true",
        "logging.progress=none",
        "trainer.num_threads=1",
        f"tracking.uri={store}",
        f"run.root={tmp_path}/runs",
    ]
    procs = [
        subprocess.Popen([sys.executable, "-m", "clfops.cli", "train", *args, f"run.name=r{i}"], stderr=subprocess.PIPE)
        for i in range(8)
    ]
    for p in procs:
        assert p.wait(timeout=400) == 0, p.stderr.read().decode()[-2000:]
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("fashion_mnist").experiment_id])
    assert len(runs) == 8 and all(r.info.status == "FINISHED" for r in runs)
    for run in runs:
        rows = list(csv.DictReader((Path(run.data.tags["clfops.run_dir"]) / "metrics.csv").open()))
        for key, expected in (("train/loss_step", 6), ("train/loss", 2), ("val/acc", 2), ("test/acc", 1)):  # 3 x 2
            in_csv = [int(r["step"]) for r in rows if r.get(key)]
            stored = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert sorted(stored) == in_csv and len(in_csv) == expected, key
