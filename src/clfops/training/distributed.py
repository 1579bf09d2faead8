"""Distributed training: which process this is, and watching the others.

Three ways to start N processes, each telling a process its rank through the environment:
- Lightning's own launcher: `clfops train trainer.devices=2 trainer.strategy=ddp` starts rank 0, and Lightning
  re-runs the same command for ranks 1..N-1 with LOCAL_RANK / NODE_RANK / WORLD_SIZE set;
- `torchrun --nproc-per-node 2 -m clfops train …` (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE);
- SLURM's `srun` (SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS…).
`train(cfg)` reads the rank before anything is written: rank 0 owns the run (run dir, MLflow run, checkpoints,
test report, model); the other ranks train and join the metric syncs, and write nothing.

A rank that dies leaves the others blocked in a collective. Lightning's launcher answers with SIGKILL to every
process, rank 0 included, which would leave the MLflow run RUNNING forever; `WatchedDDPStrategy` keeps rank 0
alive long enough to mark the run FAILED with the dead rank named (see `RankWatch`). Under torchrun or srun the
processes of other nodes are nobody's children here: gloo's error at the next collective is what tells a
survivor, and `lost_peer` turns it into one line.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from lightning.fabric.utilities.distributed import _set_num_threads_if_needed
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher


@dataclass(frozen=True)
class Rank:
    """This process's place in the job (the same numbers Lightning will derive once the Trainer exists)."""

    rank: int  # global rank: 0 owns the run's files and MLflow run
    local_processes: int  # processes on this machine: they share its cores

    @property
    def is_zero(self) -> bool:
        return self.rank == 0


def job_shape(devices: Any, num_nodes: int) -> tuple[Any, int]:
    """(processes per node, nodes). Under torchrun or srun the launcher has decided both and Lightning must
    agree with it, whatever `trainer.devices` / `trainer.num_nodes` say; otherwise the config decides."""
    if TorchElasticEnvironment.detect():
        local = int(os.environ["LOCAL_WORLD_SIZE"])
        return local, max(1, int(os.environ["WORLD_SIZE"]) // local)
    if SLURMEnvironment.detect():
        nodes = int(os.environ.get("SLURM_NNODES", "1"))
        return max(1, int(os.environ["SLURM_NTASKS"]) // nodes), nodes
    return devices, num_nodes


def process_rank(devices: Any, num_nodes: int) -> Rank:
    """The rank of this process, from the launcher's environment (rank 0 when nothing launched us)."""
    per_node, _ = job_shape(devices, num_nodes)
    local = per_node if isinstance(per_node, int) and per_node > 0 else 1
    if TorchElasticEnvironment.detect():
        return Rank(int(os.environ["RANK"]), local)
    if SLURMEnvironment.detect():
        return Rank(int(os.environ["SLURM_PROCID"]), local)
    # Lightning's launcher: children get LOCAL_RANK (and NODE_RANK on multi-node); global = node * devices + local.
    rank = int(os.environ.get("NODE_RANK", "0")) * local + int(os.environ.get("LOCAL_RANK", "0"))
    return Rank(rank, local)


# What gloo raises in a collective whose peer is gone: its socket closed or reset (the process died, its machine
# rebooted), or no answer within the process group's timeout (the machine vanished without closing it).
_GLOO_LOST = re.compile(
    r"(?:Read|Write) error \[(?P<addr>[^\]]+)\]:(?P<port>\d+): (?P<why>Connection (?:reset|closed) by peer)"
    r"|Connection closed by peer \[(?P<addr2>[^\]]+)\]:(?P<port2>\d+)"
    r"|(?P<timeout>Timed out waiting \d+ms for (?:recv|send) operation)"
)


def lost_peer(err: BaseException) -> str | None:
    """One line for a collective that failed because another process of the job is gone, else None.

    Why: under torchrun / srun the dead process is on another node, so no watch here sees it exit; gloo's
    RuntimeError is all a survivor learns, and it arrives as a multi-line C++ message under a traceback
    (with "GLHF!"). The line names the peer's address (its node) and what gloo saw; the run is then FAILED
    like any dead rank, with no traceback."""
    if not isinstance(err, RuntimeError):
        return None
    found = _GLOO_LOST.search(str(err))
    if found is None:
        return None
    if found["timeout"]:
        return f"a training process of the job stopped answering (gloo: {found['timeout'].lower()})"
    addr, port = found["addr"] or found["addr2"], found["port"] or found["port2"]
    why = (found["why"] or "connection closed by peer").lower()
    return f"training process at {addr}:{port} was lost (gloo: {why})"


def _describe(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"


class RankWatch(threading.Thread):
    """Rank 0's watch over ranks 1..N-1 started by Lightning's launcher (polled twice a second).

    When one exits non-zero, `failure` names it. Rank 0 normally notices by itself within a step (gloo raises
    "connection closed" at the next all-reduce) and fails the run with that name; if it is stuck instead (a
    collective that never returns), `on_stuck` runs after `grace_s` seconds: it marks the run FAILED and ends the
    process. Either way the surviving ranks are killed, as Lightning's own observer would.
    """

    def __init__(self, procs: list[subprocess.Popen], on_stuck: Callable[[str], None], grace_s: float = 30.0) -> None:
        super().__init__(daemon=True, name="clfops-rank-watch")
        self.procs = procs
        self.on_stuck = on_stuck
        self.grace_s = grace_s
        self.failure: str | None = None

    def run(self) -> None:
        while self.check() is None:
            if all(proc.poll() == 0 for proc in self.procs):
                return
            time.sleep(0.5)
        self.kill_all()
        time.sleep(self.grace_s)
        self.on_stuck(self.failure or "a training process failed")

    def check(self, wait_s: float = 0.0) -> str | None:
        """The first rank seen dead (non-zero exit), waiting up to `wait_s` seconds for one to be."""
        deadline = time.monotonic() + wait_s
        while self.failure is None:
            for local_rank, proc in enumerate(self.procs, start=1):
                code = proc.poll()
                if code:
                    self.failure = f"training process rank {local_rank} (pid {proc.pid}) {_describe(code)}"
                    break
            if self.failure is not None or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        return self.failure

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()


class _WatchedLauncher(_SubprocessScriptLauncher):
    """Lightning's subprocess launcher with `RankWatch` in place of its SIGKILL-everything observer."""

    def __init__(self, base: _SubprocessScriptLauncher, on_stuck: Callable[[str], None]) -> None:
        super().__init__(base.cluster_environment, base.num_processes, base.num_nodes)
        self.on_stuck = on_stuck
        self.watch: RankWatch | None = None

    def launch(self, function: Callable, *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        # Lightning 2.6's launch(), with our watch started instead of `_launch_process_observer`.
        self.cluster_environment.validate_settings(num_devices=self.num_processes, num_nodes=self.num_nodes)
        if not self.cluster_environment.creates_processes_externally:
            self._call_children_scripts()
            self.watch = RankWatch(self.procs, self.on_stuck)
            self.watch.start()
        _set_num_threads_if_needed(num_processes=self.num_processes)
        return function(*args, **kwargs)


class WatchedDDPStrategy(DDPStrategy):
    """`trainer.strategy=ddp` as clfops runs it: gloo on CPU / NCCL on GPU (Lightning's choice), rank 0 watching."""

    def __init__(self, on_stuck: Callable[[str], None] | None) -> None:
        """`on_stuck` (rank 0 only; None elsewhere): fails the run when a dead rank leaves rank 0 blocked."""
        super().__init__()
        self.on_stuck = on_stuck

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if type(self._launcher) is _SubprocessScriptLauncher and self.on_stuck is not None:
            self._launcher = _WatchedLauncher(self._launcher, self.on_stuck)

    def rank_failure(self, err: BaseException) -> str | None:
        """Rank 0, after `err`: did another rank die? With Lightning's launcher the watch names it (its exit may
        trail the "connection reset" rank 0 saw by a moment, so wait up to 2 s for it; then stop the
        survivors); under torchrun or srun, gloo's error says which peer was lost (`lost_peer`)."""
        watch = getattr(self._launcher, "watch", None)
        if watch is None:
            return lost_peer(err)
        failure = watch.check(wait_s=2.0)
        watch.kill_all()
        return failure
