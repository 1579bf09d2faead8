"""Training throughput: clfops (Lightning + Classifier) vs a plain PyTorch loop, same process, same data.

    .venv/bin/python benchmarks/train_throughput.py [--images 24000] [--epochs 1] [--precision auto] [-- OVERRIDES]

Both train the default recipe's model on the same in-memory uint8 tensors, its batch size, AdamW + OneCycle,
channels_last, and the default recipe's random horizontal flips; the plain loop does exactly the work a careful
hand-written script does per batch (gather, float, flip, normalise, forward, loss, backward, step).
Prints img/s of each and the ratio (target >= 0.95): the median of the per-round ratios. Each round runs both
sides back to back, in alternating order (plain first, then clfops first), so a slow spell of a shared machine
(its speed drifts by 10-20 % over minutes) lands in one pair's ratio, not in a comparison of best-ofs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from clfops import config as C
from clfops.data.loader import make_splits
from clfops.data.sources import load_source
from clfops.hardware import configure_threads, cpu_description, resolve_precision
from clfops.models import create_model


def plain(x: torch.Tensor, y: torch.Tensor, epochs: int, bs: int, precision: str, cfg) -> float:
    torch.manual_seed(0)
    net = create_model(cfg.model.name, 1, 10, (28, 28), C.to_container(cfg.model.args))
    net = net.to(memory_format=torch.channels_last)
    lr = float(cfg.optimizer.lr)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=float(cfg.optimizer.weight_decay))
    steps = epochs * (len(y) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.25)
    bf16 = precision.startswith("bf16")
    flip_p = float(cfg.augment.flip_p)
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(y))
        for k in range(len(y) // bs):
            j = perm[k * bs : (k + 1) * bs]
            xb = x[j].float()
            if flip_p > 0:  # per image, as the recipe (one where: no Python loop)
                xb = torch.where((torch.rand(len(j)) < flip_p)[:, None, None, None], xb.flip(3), xb)
            xb = ((xb / 255 - 0.286) / 0.353).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(net(xb), y[j], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return steps * bs / (time.perf_counter() - t0)


def clfops_fit(cfg) -> tuple[float, float]:
    """(img/s over the whole fit: setup, per-epoch validation and checkpoints included; img/s of the training
    steps alone: each epoch's `throughput_img_s` from metrics.csv, i.e. what `plain` times)."""
    from pathlib import Path

    from clfops.tracking.rundirs import read_metrics
    from clfops.training.train import train

    summary = train(cfg, [])
    per_epoch = summary["images"]["train"] // cfg.data.batch_size * cfg.data.batch_size
    images = per_epoch * cfg.trainer.max_epochs
    rates = [
        r["throughput_img_s"] for r in read_metrics(Path(summary["run_dir"]) / "metrics.csv") if "throughput_img_s" in r
    ]
    steps_only = images / sum(per_epoch / r for r in rates)
    return images / summary["train_seconds"], steps_only


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=24000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("overrides", nargs="*", help="extra clfops overrides after --, e.g. data.batch_size=256")
    a = ap.parse_args()
    overrides = [
        f"data.train_limit={a.images}",
        "data.val_fraction=0.01",
        f"trainer.max_epochs={a.epochs}",
        f"trainer.precision={a.precision}",
        "tracking.enabled=false",
        "logging.progress=none",
        "run.root=/tmp/clfops-bench-runs",
        "checkpoint.every_n_epochs=0",
        *a.overrides,
    ]
    cfg = C.compose("train", overrides)
    threads = configure_threads(None)
    precision = resolve_precision(a.precision)
    source = load_source("fashion_mnist", None)
    splits = make_splits(source, 0.01, 0, a.images)
    rates: dict[str, list[float]] = {"plain": [], "clfops": [], "clfops steps": []}
    for r in range(a.rounds):  # paired rounds, order alternating: a slow spell of the machine hits both sides

        def run_plain() -> None:
            rates["plain"].append(plain(splits.train.x, splits.train.y, a.epochs, cfg.data.batch_size, precision, cfg))

        def run_clfops() -> None:
            whole, steps_only = clfops_fit(cfg)
            rates["clfops"].append(whole)
            rates["clfops steps"].append(steps_only)

        for side in (run_plain, run_clfops) if r % 2 == 0 else (run_clfops, run_plain):
            side()
    whole = [c / p for c, p in zip(rates["clfops"], rates["plain"], strict=True)]
    steps = [c / p for c, p in zip(rates["clfops steps"], rates["plain"], strict=True)]
    print(f"cpu: {cpu_description()}, threads {threads}, precision {precision}")
    for name, key in (("plain loop", "plain"), ("clfops fit", "clfops"), ("clfops steps", "clfops steps")):
        runs = ", ".join(f"{r:.0f}" for r in rates[key])
        print(f"{name:13}: {statistics.median(rates[key]):8.0f} img/s median  (runs: {runs})")
    print(
        f"ratio clfops/plain: {statistics.median(whole):.3f} whole fit (validation, checkpoints included; target 0.95)"
        f"  per round: {', '.join(f'{w:.3f}' for w in whole)}"
    )
    print(
        f"                    {statistics.median(steps):.3f} training steps only (the loop `plain` times)"
        f"  per round: {', '.join(f'{w:.3f}' for w in steps)}"
    )


if __name__ == "__main__":
    main()
