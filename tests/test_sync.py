"""`clfops sync`: a run made offline, or whose server was lost mid-run, reaches MLflow complete, once."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from clfops.training.train import train
from conftest import run_cli


def csv_points(run_dir: Path) -> dict[str, list[int]]:
    points: dict[str, list[int]] = {}
    for row in csv.DictReader((run_dir / "metrics.csv").open()):
        for key, value in row.items():
            if value and key not in ("step", "epoch", "time"):
                points.setdefault(key, []).append(int(row["step"]))
    return points


def assert_complete(store: str, run_id: str, run_dir: Path) -> None:
    client = MlflowClient(store)
    for key, steps in csv_points(run_dir).items():
        assert sorted(m.step for m in client.get_metric_history(run_id, key)) == steps, key


@pytest.mark.slow
def test_sync_uploads_an_offline_run_once(compose, tmp_path: Path) -> None:
    summary = train(compose("tracking.enabled=false", "run.name=offline"))
    run_dir = Path(summary["run_dir"])
    store = f"sqlite:///{tmp_path}/later.db"
    first = run_cli("sync", str(run_dir), "--uri", store)
    assert first.returncode == 0, first.stderr
    run_id = json.loads((run_dir / "run.json").read_text())["run_id"]
    assert f"new run {run_id}" in first.stdout
    run = MlflowClient(store).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["model.name"] == "quick_cnn"
    assert_complete(store, run_id, run_dir)
    assert "metrics.csv" in {a.path for a in MlflowClient(store).list_artifacts(run_id)}
    again = run_cli("sync", str(run_dir), "--uri", store)
    assert again.returncode == 0 and " 0 metric points" in again.stdout
    assert_complete(store, run_id, run_dir)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(store: str, port: int, artifacts: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        store,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--artifacts-destination",
        str(artifacts),
        "--workers",
        "1",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.3)


def stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_server_lost_mid_run_training_goes_on_and_sync_completes_it(tmp_path: Path) -> None:
    store, port = f"sqlite:///{tmp_path}/server.db", free_port()
    server = start_server(store, port, tmp_path / "artifacts")
    args = [
        "data.train_limit=3000",  # 37 steps an epoch: epoch 1 online, epochs 2-3 after the server is gone
        "data.test_limit=500",
        "data.batch_size=64",
        "trainer.max_epochs=3",
        "trainer.precision=32-true",
        "logging.progress=none",
        f"tracking.uri=http://127.0.0.1:{port}",
        f"run.root={tmp_path}/runs",
        "run.name=lost",
        "tracking.log_every_n_steps=5",
    ]
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    train_proc = subprocess.Popen(
        [sys.executable, "-m", "clfops.cli", "train", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run_dir = tmp_path / "runs" / "lost"
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "checkpoints" / "last.ckpt").exists():  # epoch 1 is done and logged
            assert train_proc.poll() is None and time.monotonic() < deadline, train_proc.communicate()
            time.sleep(0.1)
    finally:
        stop_server(server)
    _, err = train_proc.communicate(timeout=300)
    assert train_proc.returncode == 0, err[-3000:]  # training went on without the server
    assert "clfops sync" in err  # the warning says what to do
    assert json.loads((run_dir / "status.json").read_text())["status"] == "FINISHED"
    run_id = json.loads((run_dir / "run.json").read_text())["run_id"]

    server = start_server(store, port, tmp_path / "artifacts")
    try:
        synced = run_cli("sync", str(run_dir))
        assert synced.returncode == 0, synced.stderr
        uri = f"http://127.0.0.1:{port}"
        assert MlflowClient(uri).get_run(run_id).info.status == "FINISHED"
        assert_complete(uri, run_id, run_dir)
    finally:
        stop_server(server)
