"""What tracking costs the training loop: epoch time with MLflow on (local SQLite store) vs off.

    .venv/bin/python benchmarks/tracking_overhead.py [--images 24000] [--epochs 2] [--rounds 2]

Runs the same recipe in one process, alternating off/on, and compares the mean `epoch_seconds` (training +
validation, from metrics.csv) of the best round of each; `train/loss` is logged every step here (far more
than the default every 50) to make the cost visible. Target: on is <= 2 % slower than off.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from clfops import config as C
from clfops.recorder import read_metrics
from clfops.train import train


def epoch_seconds(run_dir: Path) -> float:
    rows = [r["epoch_seconds"] for r in read_metrics(run_dir / "metrics.csv") if "epoch_seconds" in r]
    return sum(rows) / len(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=24000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    times: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(a.rounds):
            for mode in ("off", "on"):
                overrides = [
                    f"data.train_limit={a.images}",
                    f"trainer.max_epochs={a.epochs}",
                    "logging.progress=none",
                    f"run.root={tmp}/runs",
                    f"run.name={mode}{k}",
                    f"tracking.uri=sqlite:///{tmp}/mlflow.db",
                    f"tracking.enabled={mode == 'on'}",
                    "tracking.log_every_n_steps=1",
                    "tracking.log_model=false",
                ]
                summary = train(C.compose("train", overrides), overrides)
                times[mode].append(epoch_seconds(Path(summary["run_dir"])))
                print(f"round {k} tracking {mode:3}: {times[mode][-1]:.2f} s/epoch", flush=True)
    off, on = min(times["off"]), min(times["on"])
    print(f"cpu capability {torch.backends.cpu.get_cpu_capability()}, threads {torch.get_num_threads()}")
    print(f"best epoch time: off {off:.2f} s, on {on:.2f} s -> tracking costs {100 * (on / off - 1):+.1f} %")


if __name__ == "__main__":
    main()
