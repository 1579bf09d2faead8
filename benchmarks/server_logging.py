"""Tracking server overhead: log_batch latency and epoch time against `clfops server` vs the local SQLite store.

    .venv/bin/python benchmarks/server_logging.py [--calls 200] [--metrics 5] [--epochs 3] [--images 6000]
        [--repeats 2] [--backend-store-uri postgresql://postgres@127.0.0.1:5432/DB]

1. Latency per logging call, `--calls` calls of `--metrics` points each, on one run:
   - sync: MlflowClient.log_batch waited on (what a step would cost without the async queue);
   - async submit: Tracker.log_metrics, what the training loop pays (log_batch(synchronous=False));
   - drain: Tracker.flush after the async calls, per call (the queue catching up, off the loop's clock).
2. Epoch time: the same training (fashion_mnist, --images, points every step) with tracking.uri = a local
   SQLite file and = the server, --repeats times each in alternating order; the median `epoch_seconds` of the
   epochs after the first.
The server is `clfops server` on a free loopback port (SQLite store in a temp dir unless --backend-store-uri),
started and stopped by this script. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from clfops.config import compose
from clfops.hardware import cpu_description
from clfops.tracking import Tracker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(workdir: Path, store: str | None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    store = store or f"sqlite:///{workdir / 'server.db'}"
    cmd = [sys.executable, "-m", "clfops.cli", "server", "--port", str(port), "--backend-store-uri", store]
    cmd += ["--artifacts-destination", str(workdir / "art"), "--workers", "2"]
    log = (workdir / "server.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {(workdir / 'server.log').read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url + "/health", timeout=2).close()
            return proc, url
        except OSError:
            time.sleep(0.3)
    raise SystemExit("server not ready in 120 s")


def latency(uri: str, calls: int, metrics: int) -> dict[str, list[float]]:
    """Seconds per call: sync log_batch, async submit, and the async drain divided by the calls."""
    from mlflow.entities import Metric

    tracker = Tracker.start(uri, "bench-logging", f"latency-{int(time.time())}", {}, 10.0)
    names = [f"bench/m{i}" for i in range(metrics)]
    sync = []
    for step in range(calls):
        items = [Metric(k, 0.5, int(time.time() * 1000), step) for k in names]
        t0 = time.perf_counter()
        tracker.client.log_batch(tracker.run_id, metrics=items)
        sync.append(time.perf_counter() - t0)
    submit = []
    t_all = time.perf_counter()
    for step in range(calls, 2 * calls):
        t0 = time.perf_counter()
        tracker.log_metrics(dict.fromkeys(names, 0.5), step)
        submit.append(time.perf_counter() - t0)
    t1 = time.perf_counter()
    tracker.flush()
    drain = (time.perf_counter() - t1) / calls
    assert not tracker.offline, "the store stopped answering during the benchmark"
    tracker.end("FINISHED")
    print(f"  {uri}: {calls} async calls took {t1 - t_all:.3f}s to submit, {drain * calls:.3f}s more to drain")
    return {"sync": sync, "submit": submit, "drain": [drain]}


def epoch_seconds(uri: str, root: Path, images: int, epochs: int) -> float:
    from clfops.training.train import train

    overrides = [
        f"run.root={root}",
        f"tracking.uri={uri}",
        f"data.train_limit={images}",
        f"trainer.max_epochs={epochs}",
        "tracking.log_every_n_steps=1",
        "tracking.log_model=false",
        "tracking.experiment=bench-epochs",
        "logging.progress=none",
        "trainer.precision=32-true",
    ]
    summary = train(compose("train", overrides), overrides)
    with (Path(summary["run_dir"]) / "metrics.csv").open() as fh:
        values = [float(r["epoch_seconds"]) for r in csv.DictReader(fh) if r.get("epoch_seconds")]
    return statistics.median(values[1:] or values)


def ms(values: list[float], q: float) -> str:
    ordered = sorted(values)
    return f"{1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--metrics", type=int, default=5, help="points per log_batch call")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=6000, help="training images (before the 80/20 split)")
    parser.add_argument("--repeats", type=int, default=2, help="trainings per store, order alternating")
    parser.add_argument("--backend-store-uri", default=None, help="the server's store (default: SQLite in tmp)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clfops-bench-") as tmp:
        work = Path(tmp)
        proc, url = start_server(work, args.backend_store_uri)
        try:
            local = f"sqlite:///{work / 'local.db'}"
            lat = {name: latency(uri, args.calls, args.metrics) for name, uri in (("local", local), ("server", url))}
            times: dict[str, list[float]] = {"local": [], "server": []}
            for k in range(args.repeats):  # alternating order spreads machine noise over both
                order = (("local", local), ("server", url))
                for name, uri in order if k % 2 == 0 else order[::-1]:
                    times[name].append(epoch_seconds(uri, work / f"{name}{k}", args.images, args.epochs))
            ep = {name: statistics.median(values) for name, values in times.items()}
            print(f"  epoch seconds per training: {times}")
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
    print(f"\nCPU: {cpu_description()} ({len(os.sched_getaffinity(0))} cores usable)")
    print(f"server store: {args.backend_store_uri or 'SQLite (temp dir)'}, 2 workers, loopback\n")
    print(f"| per log_batch call ({args.metrics} points) | local SQLite | server |")
    print("|---|---|---|")
    for key, label in (("sync", "sync log_batch, median ms"), ("submit", "async submit (training loop), median ms")):
        print(f"| {label} | {ms(lat['local'][key], 0.5)} | {ms(lat['server'][key], 0.5)} |")
    print(f"| sync log_batch, p95 ms | {ms(lat['local']['sync'], 0.95)} | {ms(lat['server']['sync'], 0.95)} |")
    print(f"| async drain per call, ms | {ms(lat['local']['drain'], 0.5)} | {ms(lat['server']['drain'], 0.5)} |")
    overhead = 100 * (ep["server"] / ep["local"] - 1)
    print(f"| epoch time, median s ({args.images} images, a point every step) | {ep['local']:.3f} | "
          f"{ep['server']:.3f} ({overhead:+.1f} %) |")  # fmt: skip


if __name__ == "__main__":
    main()
