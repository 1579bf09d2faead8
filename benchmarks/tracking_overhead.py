"""What MLflow tracking costs the training loop, measured so that a loaded machine cannot fake the answer.

    .venv/bin/python benchmarks/tracking_overhead.py [--pairs 4] [--images N] [--every 50]

Every run is the real `clfops.training.train.train` (fashion_mnist, fast_cnn, the default recipe's batches and
precision) with a local SQLite store, 1 epoch of the default 48k training images (or the first `--images`),
test set cut to 1,000 images, no model logging; `tracking.log_every_n_steps=--every`
(50 is the default; 1 logs 50x more often to make the cost visible). Two measurements:

(a) Accounting, on every tracking-on run, over the fit (Lightning's on_train_start to the end of the logger's
    finalize, i.e. train + validation + the final flush): the wall time the training thread spends inside
    Tracker.log_metrics (the async submit) and Tracker.flush, plus the CPU time of MLflow's async logging
    threads (their per-thread CPU clocks), divided by the fit's wall time. Both sides of that ratio stretch
    alike when other jobs share the cores, so it does not care how loaded the machine is. A CPU-only variant
    divides (training-thread CPU in tracking calls + async-thread CPU) by the process CPU of the fit.
(b) Interleaved pairs: `--pairs` on/off pairs of short runs, order alternating (on-off, off-on, ...), the
    fit wall time of each; the median of the per-pair ratios on/off (noisy: a check on (a), not the proof).

Each tracking-on run is also checked complete: the points Tracker.log_metrics sent equal the points read back
with MlflowClient.get_metric_history. metrics.csv's own cost (RunLogger, on in both modes) is printed apart.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import lightning as L
from mlflow.tracking import MlflowClient

from clfops import config as C
from clfops.hardware import cpu_description
from clfops.tracking import Tracker
from clfops.training.recorder import RunLogger
from clfops.training.train import train


def mlflow_threads_cpu() -> dict[int, float]:
    """CPU seconds used so far by each live MLflow async-logging thread (queue loop + worker pools)."""
    cpu = {}
    for t in threading.enumerate():
        if t.name.startswith("MLflow") and t.ident is not None:
            with contextlib.suppress(OSError, ProcessLookupError):
                cpu[t.ident] = time.clock_gettime(time.pthread_getcpuclockid(t.ident))
    return cpu


@dataclass
class Ledger:
    """One run's fit window and what tracking cost inside it (seconds)."""

    active: bool = False
    fit_wall: float = 0.0
    fit_cpu: float = 0.0
    wall: dict[str, float] = field(default_factory=dict)  # training thread, per instrumented call
    cpu: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    async_cpu: float = 0.0
    points: int = 0
    _t0: float = 0.0
    _c0: float = 0.0
    _threads0: dict[int, float] = field(default_factory=dict)

    def open(self) -> None:
        self.active, self._t0, self._c0 = True, time.perf_counter(), time.process_time()
        self._threads0 = mlflow_threads_cpu()

    def close(self) -> None:
        if not self.active:
            return
        self.active = False
        self.fit_wall, self.fit_cpu = time.perf_counter() - self._t0, time.process_time() - self._c0
        now = mlflow_threads_cpu()
        self.async_cpu = sum(c - self._threads0.get(ident, 0.0) for ident, c in now.items())

    def add(self, name: str, wall: float, cpu: float) -> None:
        if self.active:
            self.wall[name] = self.wall.get(name, 0.0) + wall
            self.cpu[name] = self.cpu.get(name, 0.0) + cpu
            self.calls[name] = self.calls.get(name, 0) + 1


class FitWindow(L.Callback):
    """Opens the ledger when training starts; RunLogger.finalize (end of fit, after the flush) closes it."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.ledger.open()


def _timed(ledger: Ledger, name: str, fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t, c = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            ledger.add(name, time.perf_counter() - t, time.thread_time() - c)

    return wrapper


@contextlib.contextmanager
def instrumented(ledger: Ledger) -> Iterator[None]:
    """Time the real methods in place (no behaviour changes) and count the points the tracker sends."""
    originals = {
        (Tracker, "log_metrics"): Tracker.log_metrics,
        (Tracker, "flush"): Tracker.flush,
        (RunLogger, "log_metrics"): RunLogger.log_metrics,
        (RunLogger, "save"): RunLogger.save,
        (RunLogger, "finalize"): RunLogger.finalize,
    }

    def count_points(self: Tracker, metrics: dict[str, float], step: int) -> None:
        ledger.points += len(metrics)
        originals[(Tracker, "log_metrics")](self, metrics, step)

    def finalize(self: RunLogger, status: str) -> None:
        originals[(RunLogger, "finalize")](self, status)
        ledger.close()

    Tracker.log_metrics = _timed(ledger, "tracker.log_metrics", count_points)  # type: ignore[method-assign]
    Tracker.flush = _timed(ledger, "tracker.flush", Tracker.flush)  # type: ignore[method-assign]
    RunLogger.log_metrics = _timed(ledger, "recorder.log_metrics", RunLogger.log_metrics)  # type: ignore[method-assign]
    RunLogger.save = _timed(ledger, "recorder.save", RunLogger.save)  # type: ignore[method-assign]
    RunLogger.finalize = finalize  # type: ignore[method-assign]
    try:
        yield
    finally:
        for (cls, name), fn in originals.items():
            setattr(cls, name, fn)


def stored_points(store: str, run_id: str) -> int:
    """Metric points the store holds for the run, read back point by point."""
    client = MlflowClient(store)
    keys = client.get_run(run_id).data.metrics
    return sum(len(client.get_metric_history(run_id, key)) for key in keys)


def one_run(tmp: str, name: str, on: bool, images: int | None, every: int) -> Ledger:
    store = f"sqlite:///{tmp}/mlflow.db"
    overrides = [
        f"data.train_limit={'null' if images is None else images}",
        "data.test_limit=1000",
        "trainer.max_epochs=1",
        "logging.progress=none",
        f"run.root={tmp}/runs",
        f"run.name={name}",
        f"tracking.uri={store}",
        f"tracking.enabled={str(on).lower()}",
        f"tracking.log_every_n_steps={every}",
        "tracking.log_model=false",
    ]
    ledger = Ledger()
    with instrumented(ledger):
        summary = train(C.compose("train", overrides), overrides, extra_callbacks=[FitWindow(ledger)])
    if on:  # every point the tracker sent (train/loss, epoch metrics, test/*) is in the store
        stored = stored_points(store, summary["run_id"])
        assert stored == ledger.points, f"{name}: {ledger.points} points sent, {stored} stored"
    return ledger


def tracking_share(ledger: Ledger) -> tuple[float, float]:
    """(wall share, CPU share) of the fit that tracking took; see the module docstring (a)."""
    main_wall = ledger.wall.get("tracker.log_metrics", 0.0) + ledger.wall.get("tracker.flush", 0.0)
    main_cpu = ledger.cpu.get("tracker.log_metrics", 0.0) + ledger.cpu.get("tracker.flush", 0.0)
    return (main_wall + ledger.async_cpu) / ledger.fit_wall, (main_cpu + ledger.async_cpu) / ledger.fit_cpu


def report_run(name: str, ledger: Ledger) -> None:
    calls = ", ".join(f"{k} {ledger.calls[k]}x {1000 * ledger.wall[k]:.1f} ms" for k in sorted(ledger.wall))
    line = f"{name:6} fit {ledger.fit_wall:6.2f} s wall / {ledger.fit_cpu:6.2f} s CPU; {calls}"
    if name.startswith("on"):
        wall_share, cpu_share = tracking_share(ledger)
        line += f"; async threads {1000 * ledger.async_cpu:.1f} ms CPU; {ledger.points} points all stored"
        line += f" -> tracking {100 * wall_share:.2f} % of wall, {100 * cpu_share:.2f} % of CPU"
    print(line, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--images", type=int, default=None, help="train_limit (default: all, as the default recipe)")
    ap.add_argument("--every", type=int, default=50, help="tracking.log_every_n_steps (default recipe: 50)")
    a = ap.parse_args()
    ratios, shares = [], []
    with tempfile.TemporaryDirectory() as tmp:
        one_run(tmp, "warmup", True, a.images, a.every)  # store creation, imports, first-touch allocations
        for k in range(a.pairs):
            order = (True, False) if k % 2 == 0 else (False, True)
            fit = {}
            for on in order:
                name = f"{'on' if on else 'off'}{k}"
                ledger = one_run(tmp, name, on, a.images, a.every)
                report_run(name, ledger)
                fit[on] = ledger.fit_wall
                if on:
                    shares.append(tracking_share(ledger))
            ratios.append(fit[True] / fit[False])
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    wall = statistics.median(s[0] for s in shares)
    cpu = statistics.median(s[1] for s in shares)
    print(f"CPU: {cpu_description()}")
    n = len(shares)
    print(f"(a) tracking's share of the fit, median of {n} runs: {100 * wall:.2f} % (wall), {100 * cpu:.2f} % (CPU)")
    print(
        f"(b) fit time on/off, median of {len(ratios)} interleaved pairs: {statistics.median(ratios):.3f} "
        f"(quartiles {q[0]:.3f}-{q[2]:.3f})"
    )


if __name__ == "__main__":
    main()
