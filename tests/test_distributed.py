"""Multi-process training (issue: scale out): one run per job, synced metrics, ranks that share every epoch,
resume across world sizes, torchrun and Lightning's launcher, a dead rank that fails the run."""

from __future__ import annotations

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
from clfops.data import Split
from clfops.data.loader import eval_loader, make_splits, train_loader
from clfops.data.sources import load_source
from clfops.safe_files import load_checkpoint
from clfops.serving.saved_model import load_model
from clfops.training.distributed import job_shape, process_rank
from clfops.training.train import train
from conftest import CLFOPS, TINY, run_cli
from test_model_logging import normalised

# Two processes of a tiny MLP: each process start (imports, data) costs a few seconds on 2 cores.
DDP = ["trainer.devices=2", "trainer.strategy=ddp", "model=mlp", "data.train_limit=1200", "data.test_limit=300"]


def _runs(store: str) -> list:
    client = MlflowClient(store)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments)


def test_ranks_share_every_epoch_exactly() -> None:
    """Training: the union of what the ranks see in an epoch is the epoch (padding repeats < world_size images,
    and every rank steps the same number of times). Evaluation: an exact partition, nothing repeated."""
    for n, world in ((1000, 2), (1001, 2), (1003, 3)):
        split = Split(torch.arange(n), torch.arange(n))  # image i is the number i
        seen, lengths = [], []
        for rank in range(world):
            loader = train_loader(split, 64, seed=3, rank=rank, world_size=world)
            loader.drop_last = False
            loader.sampler.set_epoch(2)
            batches = [y for _, y in loader]
            lengths.append(len(batches))
            seen += torch.cat(batches).tolist()
        assert set(seen) == set(range(n)) and len(seen) - n < world and len(set(lengths)) == 1
        evaluated = [torch.cat([y for _, y in eval_loader(split, 100, r, world)]) for r in range(world)]
        assert sorted(torch.cat(evaluated).tolist()) == list(range(n))


def test_rank_comes_from_the_launchers_environment(monkeypatch) -> None:
    for var in (
        "RANK",
        "LOCAL_RANK",
        "NODE_RANK",
        "GROUP_RANK",
        "LOCAL_WORLD_SIZE",
        "WORLD_SIZE",
        "TORCHELASTIC_RUN_ID",
    ):
        monkeypatch.delenv(var, raising=False)
    assert process_rank(2, 1).rank == 0 and process_rank(2, 1).local_processes == 2
    monkeypatch.setenv("LOCAL_RANK", "1")  # Lightning's launcher, second node
    monkeypatch.setenv("NODE_RANK", "1")
    assert process_rank(2, 2).rank == 3
    torchrun = {"RANK": "5", "GROUP_RANK": "1", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4", "WORLD_SIZE": "8"}
    torchrun["TORCHELASTIC_RUN_ID"] = "job"  # what torch.distributed.is_torchelastic_launched() looks at
    for key, value in torchrun.items():
        monkeypatch.setenv(key, value)
    rank = process_rank(1, 1)  # torchrun's numbers win over trainer.devices / num_nodes
    assert (rank.rank, rank.local_processes, rank.is_zero) == (5, 4, False)
    assert job_shape(1, 1) == (4, 2)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_lightning_launcher_one_run_synced_val_and_resume_in_one_process(tmp_path: Path, store: str) -> None:
    base = [f"run.root={tmp_path / 'runs'}", "run.name=ddp", f"tracking.uri={store}", *TINY, *DDP]
    result = run_cli("train", *base, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "ddp"
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["ddp"]
    (run,) = _runs(store)  # rank 1 created no MLflow run of its own
    assert run.info.status == "FINISHED"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["run_id"] == run.info.run_id
    assert summary["hardware"]["distributed_backend"] == "gloo"  # on CPUs (NCCL on GPUs: tests/test_cuda.py)
    assert {"best.ckpt", "last.ckpt"} <= {p.name for p in (run_dir / "checkpoints").iterdir()}

    # The 2-process val/acc (each rank scored half) equals one process scoring the same model on the same images.
    cfg = C.compose("train", base)
    source = load_source(cfg.data.name, cfg.data.root, None, None)
    val = make_splits(source, cfg.data.val_fraction, cfg.seed, cfg.data.train_limit).val
    net, manifest = load_model(Path(summary["model_dir"]))
    with torch.no_grad():
        x = normalised(val.x, manifest)
        logits = net(x)
        if manifest.test_flip:  # the default recipe validates with test-time flip
            logits = (logits + net(torch.flip(x, dims=[3]))) / 2
    client = MlflowClient(store)
    (logged_acc,) = [m.value for m in client.get_metric_history(run.info.run_id, "val/acc")]
    (logged_loss,) = [m.value for m in client.get_metric_history(run.info.run_id, "val/loss")]
    assert logged_acc == (logits.argmax(1) == val.y).float().mean().item()
    assert abs(logged_loss - torch.nn.functional.cross_entropy(logits, val.y).item()) < 1e-4

    # A DDP checkpoint continues in one process: the same run dir and MLflow run, one more epoch.
    more = [f"resume={run_dir}", "trainer.max_epochs=2", "trainer.devices=1", "trainer.strategy=auto"]
    resumed = train(C.compose("train", more), more)
    assert resumed["run_id"] == run.info.run_id and resumed["epochs"] == 2 and resumed["processes"] == 1
    assert len(client.get_metric_history(run.info.run_id, "val/acc")) == 2
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


@pytest.mark.slow
@pytest.mark.multiprocess
def test_torchrun_continues_a_one_process_run(tmp_path: Path, compose, store: str) -> None:
    first = train(compose("model=mlp", "data.train_limit=1200", "data.test_limit=300", "run.name=one"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "clfops.cli", "train", f"resume={first['run_dir']}", "trainer.max_epochs=2"]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test accuracy" in result.stdout and result.stdout.count("run dir:") == 1  # rank 0 reports
    summary = json.loads((Path(first["run_dir"]) / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["epochs"] == 2 and summary["run_id"] == first["run_id"]
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["one"]
    (run,) = _runs(store)
    assert run.info.status == "FINISHED"
    assert len(MlflowClient(store).get_metric_history(run.info.run_id, "val/acc")) == 2


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_killed_rank_fails_the_run_and_keeps_its_checkpoints(tmp_path: Path, store: str) -> None:
    args = [f"run.root={tmp_path / 'runs'}", "run.name=k", f"tracking.uri={store}", *TINY, *DDP]
    args += ["trainer.max_epochs=50", "data.test_limit=100"]  # long enough to be killed mid-way
    proc = subprocess.Popen(
        [*CLFOPS, "train", *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    last = tmp_path / "runs" / "k" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert last.exists(), proc.communicate()[1][-3000:]
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    os.kill(int(children[0]), signal.SIGKILL)  # rank 1, started by Lightning's launcher
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "clfops: error: training process rank 1" in err and "killed by SIGKILL" in err
    assert "Traceback" not in err.split("clfops: error:")[-1]
    status = json.loads((tmp_path / "runs" / "k" / "status.json").read_text())
    assert status["status"] == "FAILED" and "rank 1" in status["message"]
    (run,) = _runs(store)
    assert run.info.status == "FAILED"
    assert load_checkpoint(last)["epoch"] >= 0  # intact: a resume can start from it
