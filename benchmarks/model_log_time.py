"""Model logging time: clfops' pyfunc-from-code model vs the stock `mlflow.pytorch.log_model`, same run.

    .venv/bin/python benchmarks/model_log_time.py [--model fast_cnn] [--repeats 5] [--stock 2]

What `clfops train` does at the end of a run (tracking.log_model: safetensors + manifest, signature, a
2-image input example that MLflow validates by loading the model, explicit pip pins) is timed `--repeats`
times on a fresh local SQLite store; the stock call (default settings: requirement inference, MLflow 3's
default serialization) `--stock` times. Prints the median of each (target: clfops <= 2 s).
Runs in a temporary directory, so nothing is left behind.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import mlflow
import torch

from clfops.models import create_model
from clfops.registry.model_logging import log_model
from clfops.serving.saved_model import Manifest, save_model
from clfops.tracking import Tracker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fast_cnn")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--stock", type=int, default=2, help="stock mlflow.pytorch.log_model calls (0: skip)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="clfops-bench-"))
    os.chdir(work)  # a SQLite store keeps its artifacts in ./mlruns
    store = f"sqlite:///{work / 'mlflow.db'}"
    torch.manual_seed(0)
    net = create_model(args.model, 1, 10, (28, 28), {}).eval()
    classes = [str(i) for i in range(10)]
    manifest = Manifest(args.model, {}, classes, 1, [28, 28], [0.286], [0.353])
    model_dir = save_model(work / "model", net, manifest)
    example = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8).numpy()
    tracker = Tracker.start(store, "bench", "model-log", {}, 10.0)

    ours = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        log_model(store, tracker.run_id, model_dir, example)
        ours.append(time.perf_counter() - t0)
    print(f"clfops pyfunc (from code, safetensors): median {statistics.median(ours):.2f} s  runs {fmt(ours)}")

    stock = []
    mlflow.set_tracking_uri(store)
    with mlflow.start_run(run_id=tracker.run_id):
        for _ in range(args.stock):
            t0 = time.perf_counter()
            mlflow.pytorch.log_model(net, name="stock", input_example=example.astype("float32"))
            stock.append(time.perf_counter() - t0)
    if stock:
        print(f"stock mlflow.pytorch.log_model:         median {statistics.median(stock):.2f} s  runs {fmt(stock)}")
    params = sum(p.numel() for p in net.parameters())
    print(f"model {args.model} ({params:,} parameters), mlflow {mlflow.__version__}, torch {torch.__version__}")


def fmt(times: list[float]) -> str:
    return " ".join(f"{t:.2f}" for t in times)


if __name__ == "__main__":
    main()
