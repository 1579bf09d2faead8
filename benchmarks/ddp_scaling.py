"""DDP on one CPU machine: `clfops train trainer.devices=2 trainer.strategy=ddp` vs one process, same recipe.

    .venv/bin/python benchmarks/ddp_scaling.py [--rounds 2] [--images 24000] [--epochs 2]

Each round runs both as whole `clfops train` processes (1 process, then 2, alternating), and reads the
training throughput (`throughput_img_s`, images per second of the whole job, training steps only) of the last
epoch from metrics.csv, plus the wall time of the process. Prints the per-round ratio 2-process / 1-process and
the median. Threads per process = cores / processes (2 cores: 1 thread each under DDP, 2 for one process).
Goal (issue: scale out): the 2-process run not slower than 1 process by more than 15 % (ratio >= 0.85).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clfops.hardware import available_cores, cpu_description


def run(processes: int, images: int, epochs: int) -> tuple[float, float]:
    """(throughput img/s of the last epoch, wall seconds) of one whole `clfops train` process."""
    with tempfile.TemporaryDirectory() as tmp:
        args = [f"data.train_limit={images}", f"trainer.max_epochs={epochs}", "data.test_limit=1000"]
        args += [f"run.root={tmp}/runs", "run.name=b", "tracking.enabled=false", "logging.progress=none"]
        if processes > 1:
            args += [f"trainer.devices={processes}", "trainer.strategy=ddp"]
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "clfops.cli", "train", *args], cwd=tmp, check=True, capture_output=True)
        wall = time.perf_counter() - t0
        with open(Path(tmp) / "runs" / "b" / "metrics.csv", newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("throughput_img_s")]
        return float(rows[-1]["throughput_img_s"]), wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--images", type=int, default=24_000, help="training images before the 80/20 split")
    ap.add_argument("--epochs", type=int, default=2)
    a = ap.parse_args()
    print(f"CPU: {cpu_description()}, {available_cores()} usable cores")
    ratios = []
    for k in range(a.rounds):
        one, one_wall = run(1, a.images, a.epochs)
        two, two_wall = run(2, a.images, a.epochs)
        ratios.append(two / one)
        print(
            f"round {k}: 1 process {one:,.0f} img/s ({one_wall:.1f} s wall), "
            f"2 processes {two:,.0f} img/s ({two_wall:.1f} s wall), ratio {ratios[-1]:.3f}",
            flush=True,
        )
    print(f"median ratio 2-process / 1-process throughput: {statistics.median(ratios):.3f} (goal >= 0.85)")


if __name__ == "__main__":
    main()
