"""Checkpoints and exact resume: kill a real `clfops train` (SIGKILL, SIGTERM), resume, get the same run."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from clfops import config as C
from clfops.safe_files import CheckpointError, atomic_write_bytes, load_checkpoint
from clfops.training.train import train
from conftest import run_cli

# 3 epochs x 37 steps (1,200 train images, 32 a batch): the kill lands mid-epoch 2 whatever the machine's
# speed, because the test waits for epoch 2's first logged row. Strong augmentation and dropout: resume must
# restore the augmentation generator and the global RNG too.
RECIPE = [
    "data.val_fraction=0.2",
    "data.train_limit=1500",
    "data.test_limit=500",
    "data.batch_size=32",
    "trainer.max_epochs=3",
    "deterministic=true",
    "trainer.precision=32-true",
    "augment=strong",
    "model.args.dropout=0.2",
    "tracking.log_every_n_steps=10",
    "logging.progress=none",
    "checkpoint.every_n_epochs=0",
]
TIMING = {"time", "epoch_seconds", "throughput_img_s"}


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    rows = csv.DictReader((run_dir / "metrics.csv").open())
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The uninterrupted run every resumed run must equal."""
    root = tmp_path_factory.mktemp("ref")
    cfg = C.compose("train", [*RECIPE, f"run.root={root}", "run.name=ref", "tracking.enabled=false"])
    return train(cfg)


def in_epoch_2(run_dir: Path) -> bool:
    """Epoch 1 is checkpointed and epoch 2 has logged a training step (metrics.csv is rewritten atomically)."""
    if not (run_dir / "checkpoints" / "last.ckpt").exists() or not (run_dir / "metrics.csv").exists():
        return False
    return any(row["epoch"] == "1" and row.get("train/loss_step") for row in metric_rows(run_dir))


def start_and_kill(tmp_path: Path, sig: int) -> tuple[subprocess.Popen, Path]:
    """Start `clfops train`, wait until epoch 1 is checkpointed and epoch 2 under way, then send `sig`."""
    run_dir = tmp_path / "runs" / "cut"
    args = [*RECIPE, f"run.root={tmp_path / 'runs'}", "run.name=cut", f"tracking.uri=sqlite:///{tmp_path}/m.db"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "clfops.cli", "train", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 240
    while not in_epoch_2(run_dir):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "not in epoch 2 after 240 s"
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(sig)
    proc.wait(timeout=60)
    return proc, run_dir


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_run_resumes_to_the_same_result(tmp_path: Path, reference: dict, sig: int) -> None:
    proc, run_dir = start_and_kill(tmp_path, sig)
    store = f"sqlite:///{tmp_path}/m.db"
    run_id = json.loads((run_dir / "run.json").read_text())["run_id"]
    status = json.loads((run_dir / "status.json").read_text())["status"]
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM, proc.stderr.read()
        assert status == "KILLED"
        assert MlflowClient(store).get_run(run_id).info.status == "KILLED"
        assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["epoch_state"]["mid_epoch"] in (True, False)
    else:
        assert proc.returncode == -signal.SIGKILL
        assert status == "RUNNING"  # nobody could say otherwise; `clfops runs` shows it as STOPPED
        listing = run_cli("runs", "--root", str(tmp_path / "runs"))
        assert "STOPPED" in listing.stdout and "resume=" in listing.stdout

    resumed = run_cli("train", f"resume={run_dir}", f"tracking.uri={store}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test_acc"] == reference["test_acc"] and summary["test_loss"] == reference["test_loss"]
    assert metric_rows(run_dir) == metric_rows(Path(reference["run_dir"]))

    client = MlflowClient(store)
    assert client.get_run(run_id).info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run_id, "val/acc")] == [36, 73, 110]  # no duplicate epoch
    steps = [m.step for m in client.get_metric_history(run_id, "train/loss_step")]
    assert len(steps) == len(set(steps)) == 11  # every 10th of 111 steps, each exactly once
    epochs = [m.step for m in client.get_metric_history(run_id, "train/loss")]  # the epoch mean, once per epoch
    assert len(epochs) == len(set(epochs)) == 3


def test_atomic_write_keeps_old_file_when_rename_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "last.ckpt"
    atomic_write_bytes(target, b"old and whole")

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old and whole"
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left behind


class Payload:
    def __reduce__(self):  # what a malicious checkpoint would carry
        return (os.system, ("echo pwned",))


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "extra": Payload()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)


@pytest.fixture
def finished_run(compose) -> dict:
    return train(compose("run.name=done", "trainer.max_epochs=2", "checkpoint.every_n_epochs=1"))


@pytest.mark.slow
def test_best_last_and_every_n_checkpoints(finished_run: dict) -> None:
    ckdir = Path(finished_run["run_dir"]) / "checkpoints"
    assert sorted(p.name for p in ckdir.iterdir()) == ["best.ckpt", "epoch000.ckpt", "epoch001.ckpt", "last.ckpt"]
    rows = [r for r in metric_rows(Path(finished_run["run_dir"])) if r.get("val/acc")]
    best_epoch = max(rows, key=lambda r: float(r["val/acc"]))["epoch"]
    best = load_checkpoint(ckdir / "best.ckpt")
    assert str(best["epoch"]) == best_epoch
    assert best["clfops"]["classes"][0] == "T-shirt/top" and best["clfops"]["config"]["model"]["name"] == "quick_cnn"


@pytest.mark.slow
def test_corrupt_checkpoint_is_a_clear_error_and_nothing_is_overwritten(finished_run: dict, tmp_path: Path) -> None:
    last = Path(finished_run["run_dir"]) / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    before = hashlib.sha256(last.read_bytes()).hexdigest()
    proc = run_cli("train", f"resume={finished_run['run_dir']}", "trainer.max_epochs=3", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "corrupt or truncated" in proc.stderr
    assert hashlib.sha256(last.read_bytes()).hexdigest() == before


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "key"),
    [("model.args.width=16", "model"), ("data.train_limit=500", "data.train_limit"), ("model=cnn", "model")],
)
def test_incompatible_resume_names_the_difference(finished_run: dict, tmp_path: Path, override: str, key: str) -> None:
    proc = run_cli("train", f"resume={finished_run['run_dir']}", override, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and key in line and "Traceback" not in line


@pytest.mark.slow
def test_more_epochs_is_a_harmless_change_and_is_recorded(finished_run: dict, store: str) -> None:
    cfg = C.compose("train", [f"resume={finished_run['run_dir']}", "trainer.max_epochs=3"])
    summary = train(cfg, [f"resume={finished_run['run_dir']}", "trainer.max_epochs=3"])
    assert summary["epochs"] == 3 and summary["run_id"] == finished_run["run_id"]
    run = MlflowClient(store).get_run(summary["run_id"])
    assert "trainer.max_epochs" in run.data.tags["clfops.resume_changed"]
    assert len(MlflowClient(store).get_metric_history(summary["run_id"], "val/acc")) == 3


@pytest.mark.slow
def test_nan_loss_stops_with_a_clear_message(tmp_path: Path, store: str) -> None:
    proc = run_cli(
        "train",
        "data.train_limit=600",
        "data.batch_size=64",
        "optimizer=sgd",
        "optimizer.lr=1e30",
        f"run.root={tmp_path}/runs",
        "run.name=nan",
        f"tracking.uri={store}",
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    last_line = proc.stderr.strip().splitlines()[-1]
    assert last_line.startswith("clfops: error: loss became nan") and "optimizer.lr" in last_line
    run_id = json.loads((tmp_path / "runs" / "nan" / "run.json").read_text())["run_id"]
    run = MlflowClient(store).get_run(run_id)
    assert run.info.status == "FAILED" and "NonFiniteLossError" in run.data.tags["error"]


@pytest.mark.slow
def test_nan_loss_keeps_the_last_good_checkpoint(finished_run: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    last = Path(finished_run["run_dir"]) / "checkpoints" / "last.ckpt"
    before = hashlib.sha256(last.read_bytes()).hexdigest()
    import clfops.training.module

    def diverged(logits: torch.Tensor, target: torch.Tensor, **kwargs: object) -> torch.Tensor:
        return (logits.sum() * float("nan")).float()

    monkeypatch.setattr(clfops.training.module.F, "cross_entropy", diverged)
    overrides = [f"resume={finished_run['run_dir']}", "trainer.max_epochs=3"]
    with pytest.raises(clfops.training.module.NonFiniteLossError, match="loss became nan at epoch 2"):
        train(C.compose("train", overrides), overrides)
    assert hashlib.sha256(last.read_bytes()).hexdigest() == before
    assert json.loads((Path(finished_run["run_dir"]) / "status.json").read_text())["status"] == "FAILED"
