"""Across nodes (issue #23): two "nodes" on loopback, each `torchrun --nnodes 2 --node-rank R --nproc-per-node 1`
with a static rendezvous, training `data=stream` shards from S3 (SeaweedFS). The job is one run that trains
exactly like 2 processes on one node, and a killed node fails it in bounded time with one line."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from clfops import config as C
from clfops.data.pack import pack
from clfops.data.stream import S3Options, StreamSettings, _dataset, _load_split, open_stream, stream_loaders
from clfops.serving.saved_model import load_model
from conftest import free_port
from test_model_logging import normalised
from test_stream import write_image_folder

PER_CLASS = 40  # 120 images: enough val images that rank 0's half would give another val/loss than all of them
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
KILLED_NODE_BOUND_S = 120  # how long node 0 may take to fail the job once node 1 is gone


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("images"), PER_CLASS)


@pytest.fixture
def shards(image_folder: Path, seaweed: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """The image folder packed into the seaweed bucket; the S3 env set here, so the launches inherit it."""
    for key, value in seaweed.items():
        monkeypatch.setenv(key, value)
    pack(str(image_folder), "s3://mlflow/toy", 0.2, 0, "1MB", S3Options.from_env(), None)
    return "s3://mlflow/toy"


def _args(shards: str, runs: Path, name: str, store: str, *extra: str) -> list[str]:
    """`clfops train` overrides shared by every launch: the same seed, data and threads in both layouts (the
    thread count changes float summation order, so it must not depend on the processes per machine)."""
    return [
        "data=stream",
        f"data.root={shards}",
        "data.batch_size=8",
        "data.eval_batch_size=8",  # litdata deals val out in batches: 16 would leave rank 0 none of 19
        "model=mlp",
        "model.args.hidden=32",
        "trainer.max_epochs=1",
        "trainer.precision=32-true",
        "trainer.num_threads=1",
        "logging.progress=none",
        "tracking.log_model=false",  # the pyfunc model is the same code as one-node runs; model/ is still saved
        "seed=7",
        f"run.root={runs}",
        f"run.name={name}",
        f"tracking.uri={store}",
        *extra,
    ]


def _launch(torchrun: list[str], args: list[str], cwd: Path) -> subprocess.Popen:
    """One launch, in its own process group (a node to kill whole) and working directory (its stream cache,
    as on a machine of its own); stdout/stderr go to files, so that two launches never block on a pipe."""
    cwd.mkdir(parents=True, exist_ok=True)
    out, err = (cwd / "stdout.txt").open("w"), (cwd / "stderr.txt").open("w")
    cmd = [*TORCHRUN, *torchrun, "-m", "clfops.cli", "train", *args]
    return subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err, start_new_session=True)


def _two_nodes(args: list[str], tmp_path: Path) -> list[subprocess.Popen]:
    """Node 0 and node 1 of a static rendezvous on 127.0.0.1: node 0's agent hosts the store at PORT."""
    port = free_port()
    nodes = []
    for node in (0, 1):
        cwd = tmp_path / f"node{node}"
        shape = ["--nnodes", "2", "--node-rank", str(node), "--nproc-per-node", "1"]
        # --tee 2: each worker's own stderr also in a file, apart from the agent's report that follows it
        logs = ["--log-dir", str(cwd / "logs"), "--tee", "2"]
        nodes.append(_launch([*shape, "--rdzv-endpoint", f"127.0.0.1:{port}", *logs], args, cwd))
    return nodes


def _kill_node(launch: subprocess.Popen) -> None:
    """SIGKILL a launch as a machine dies: torchrun's agent and its workers, which it starts in sessions of
    their own (so the agent's process group alone would leave them running)."""
    workers = Path(f"/proc/{launch.pid}/task/{launch.pid}/children")
    pids = [int(pid) for pid in workers.read_text().split()] if workers.exists() else []
    for pid in [*pids, launch.pid]:
        with contextlib.suppress(ProcessLookupError):  # exited meanwhile
            os.killpg(os.getpgid(pid), signal.SIGKILL)
    launch.wait()


@pytest.fixture
def reaper() -> Iterator[list[subprocess.Popen]]:
    """Launches a test started; any still running at the end (a failed assert) is killed, workers included."""
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            _kill_node(proc)


def _stderr(cwd: Path) -> str:
    return (cwd / "stderr.txt").read_text()


def _only_run(store: str):
    client = MlflowClient(store)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return run


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model" / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_nodes_train_exactly_as_two_processes_on_one_node(
    tmp_path: Path, shards: str, reaper: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs, nodes_store, one_store = (
        tmp_path / "runs",
        f"sqlite:///{tmp_path / 'nodes.db'}",
        f"sqlite:///{tmp_path / 'one.db'}",
    )
    reaper += _two_nodes(_args(shards, runs, "nodes", nodes_store), tmp_path)
    for node, launch in enumerate(reaper):
        assert launch.wait(timeout=300) == 0, _stderr(tmp_path / f"node{node}")[-3000:]
    assert [p.name for p in runs.iterdir()] == ["nodes"]  # node 1 wrote no run dir of its own
    run = _only_run(nodes_store)  # nor an MLflow run
    assert run.info.status == "FINISHED"
    summary = json.loads((runs / "nodes" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["run_id"] == run.info.run_id
    assert (runs / "nodes" / "status.json").read_text().count('"FINISHED"') == 1

    # The same job as 2 processes on one node: same seed, overrides and S3 data.
    one = _launch(["--standalone", "--nproc-per-node", "2"], _args(shards, runs, "one", one_store), tmp_path / "one")
    reaper.append(one)
    assert one.wait(timeout=300) == 0, _stderr(tmp_path / "one")[-3000:]
    nodes_weights, one_weights = _weights(runs / "nodes"), _weights(runs / "one")
    assert nodes_weights.keys() == one_weights.keys()
    assert all(torch.equal(nodes_weights[k], one_weights[k]) for k in nodes_weights)  # bit for bit
    history = {}
    for store in (nodes_store, one_store):
        client, run_id = MlflowClient(store), _only_run(store).info.run_id
        history[store] = {k: [m.value for m in client.get_metric_history(run_id, k)] for k in ("val/acc", "val/loss")}
    assert history[nodes_store] == history[one_store] and len(history[nodes_store]["val/acc"]) == 1

    # Synced across the nodes: the logged val/loss is that of all val images, scored here in one process (each
    # rank scored its share: rank 0's share alone would give another mean).
    monkeypatch.chdir(tmp_path)  # the stream cache of this read
    cfg = C.compose("train", _args(shards, runs, "check", nodes_store))
    val = _load_split(_dataset(StreamSettings.from_config(cfg.data), "val", False), 64, None)
    assert len(val.y) == summary["images"]["val"]
    net, manifest = load_model(runs / "nodes" / "model")
    with torch.no_grad():
        x = normalised(val.x, manifest)
        logits = net(x)
        if manifest.test_flip:  # the default recipe validates with test-time flip
            logits = (logits + net(torch.flip(x, dims=[3]))) / 2
    assert abs(history[nodes_store]["val/loss"][0] - torch.nn.functional.cross_entropy(logits, val.y).item()) < 1e-5
    assert history[nodes_store]["val/acc"][0] == (logits.argmax(1) == val.y).float().mean().item()


def test_stream_ranks_read_their_own_share_under_torchrun(
    tmp_path: Path, image_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torchrun sets WORLD_SIZE (and RANK, which litdata does not read) before torch.distributed starts: every
    rank reads its own share of train and val, and the one-process reads (test split, previews) all of theirs."""
    pack(str(image_folder), str(tmp_path / "shards"), 0.2, 0, "1MB", S3Options.from_env(), None)
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = C.compose("train", ["data=stream", f"data.root={tmp_path / 'shards'}", "data.batch_size=8",
                              "data.eval_batch_size=8"])  # fmt: skip
    counts = json.loads((tmp_path / "shards" / "clfops.json").read_text())["counts"]
    _, splits = open_stream(cfg.data)
    assert len(splits.test.y) == counts["test"]
    shares = {}  # (split, rank) -> the images that rank read, as bytes (noise: no two images are the same)
    for rank in (0, 1):
        for split, loader in zip(("train", "val"), stream_loaders(cfg.data, 7, rank, 2), strict=True):
            shares[split, rank] = [bytes(x.numpy()) for batch, _ in loader for x in batch]
    assert len(shares["train", 0]) == len(shares["train", 1]) > counts["train"] // 2 - 8  # equal steps
    assert not set(shares["train", 0]) & set(shares["train", 1])  # (before: both read rank 0's share)
    assert len(set(shares["val", 0]) | set(shares["val", 1])) == counts["val"]  # an exact partition
    assert len(shares["val", 0]) + len(shares["val", 1]) == counts["val"]


def _survivor_line(cwd: Path) -> str:
    """The last line of a node's rank's own stderr (torchrun's --tee copy), checked to be its only error line
    with no traceback; the node's console has it too, followed by torchrun's report that the rank exited 1."""
    (worker_log,) = (cwd / "logs").rglob("attempt_0/0/stderr.log")
    err = worker_log.read_text()
    assert err.count("clfops: error:") == 1 and "Traceback" not in err, err[-3000:]
    console = _stderr(cwd)
    assert console.count("clfops: error:") == 1 and "exitcode  : 1" in console
    return err.rstrip("\n").splitlines()[-1]


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("killed", [1, 0], ids=["node1-killed", "node0-killed"])
def test_a_killed_node_fails_the_job_in_bounded_time(tmp_path: Path, shards: str, reaper: list, killed: int) -> None:
    store, runs = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "runs"
    args = _args(shards, runs, "killed", store, "trainer.max_epochs=1000")  # far longer than the test waits
    reaper += _two_nodes(args, tmp_path)
    survivor = reaper[1 - killed]
    last = runs / "killed" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.exists() and survivor.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert last.exists(), _stderr(tmp_path / "node0")[-3000:]  # under way: an epoch done
    _kill_node(reaper[killed])
    killed_at = time.monotonic()
    try:
        survivor.wait(timeout=KILLED_NODE_BOUND_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"node {1 - killed} still running {KILLED_NODE_BOUND_S} s after node {killed} died")
    print(f"node {1 - killed} exited {survivor.returncode} {time.monotonic() - killed_at:.1f} s after the kill")
    assert survivor.returncode == 1, _stderr(tmp_path / f"node{1 - killed}")[-3000:]
    line = _survivor_line(tmp_path / f"node{1 - killed}")
    status = json.loads((runs / "killed" / "status.json").read_text())
    if killed == 1:  # rank 0 survives: it names the lost peer and ends the run FAILED
        assert line.startswith("clfops: error: training process at 127.0.0.1:") and "was lost (gloo: connection" in line
        assert "the run is FAILED; continue it with: clfops train resume=" in line
        assert status["status"] == "FAILED" and "was lost (gloo: connection" in status["message"]
        assert _only_run(store).info.status == "FAILED"
    else:  # rank 0 died with node 0: rank 1 says so and exits; nothing is left to end the run (it stays RUNNING)
        assert line.startswith("clfops: error: rank 1: training process at 127.0.0.1:") and "was lost" in line
        assert status["status"] == "RUNNING" and _only_run(store).info.status == "RUNNING"
