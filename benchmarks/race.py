"""The race: the default `clfops train` vs the plain PyTorch reference script, as whole processes.

    .venv/bin/python benchmarks/race.py [--seeds 0 1] [--reference ../shared/bench/raw_reference.py]
        [--baseline-src OLD_CHECKOUT/src] [-- OVERRIDES]

Each contestant runs as its own process (start-up, data load, validation, test, tracking, model logging all
count for clfops; the reference counts the same way: its whole process). Seeds alternate reference, clfops,
reference, clfops… so machine noise hits both. `--baseline-src` adds a third contestant in the same
alternation: the clfops of another checkout (e.g. a `git worktree` of an older commit), for before/after
figures. Prints each run, then mean accuracy and mean wall time of each, and the ratio clfops/reference
(goal: clfops accuracy >= 0.93 with ratio <= 1.0).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from clfops.hardware import cpu_description

REPO = Path(__file__).resolve().parents[1]


def run_reference(script: Path, seed: int) -> tuple[float, float]:
    cmd = [sys.executable, str(script), "--arch", "small", "--epochs", "3", "--cl", "--seed", str(seed)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - t0
    return float(re.search(r"test_acc=([0-9.]+)", out).group(1)), wall


def run_clfops(seed: int, overrides: list[str], src: Path | None = None) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        args = [f"seed={seed}", f"run.root={tmp}/runs", "run.name=race", f"tracking.uri=sqlite:///{tmp}/mlflow.db"]
        # This interpreter + `-m clfops.cli`: the clfops on sys.path (PYTHONPATH=worktree/src), not .venv/bin's.
        cmd = [sys.executable, "-m", "clfops.cli", "train", *args, "logging.progress=none", *overrides]
        t0 = time.perf_counter()
        env = dict(os.environ, PYTHONPATH=str(src)) if src else None
        subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=tmp, env=env)
        wall = time.perf_counter() - t0
        summary = json.loads((Path(tmp) / "runs" / "race" / "summary.json").read_text())
        print(f"  clfops timings (s): {summary.get('timings')}", flush=True)
        return summary["test_acc"], wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--reference", type=Path, default=REPO.parent / "shared" / "bench" / "raw_reference.py")
    ap.add_argument("--baseline-src", type=Path, help="another checkout's src/: a third contestant (before/after)")
    ap.add_argument("overrides", nargs="*", help="extra clfops overrides (after --)")
    a = ap.parse_args()
    ref, ours, base = [], [], []
    for seed in a.seeds:
        ref.append(run_reference(a.reference, seed))
        print(f"seed {seed} reference: acc {ref[-1][0]:.4f}  wall {ref[-1][1]:.1f} s", flush=True)
        ours.append(run_clfops(seed, a.overrides))
        print(f"seed {seed} clfops   : acc {ours[-1][0]:.4f}  wall {ours[-1][1]:.1f} s", flush=True)
        if a.baseline_src:
            base.append(run_clfops(seed, a.overrides, a.baseline_src.resolve()))
            print(f"seed {seed} baseline : acc {base[-1][0]:.4f}  wall {base[-1][1]:.1f} s", flush=True)

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs)

    r_acc, r_wall = mean([r[0] for r in ref]), mean([r[1] for r in ref])
    o_acc, o_wall = mean([o[0] for o in ours]), mean([o[1] for o in ours])
    print(f"cpu: {cpu_description()}")
    if torch.cuda.is_available():  # trainer.accelerator=auto (the default) trains clfops there; the reference: CPU
        print(f"gpu: {torch.cuda.get_device_name(0)}")
    print(f"reference: mean acc {r_acc:.4f}, mean wall {r_wall:.1f} s")
    print(f"clfops   : mean acc {o_acc:.4f}, mean wall {o_wall:.1f} s  ({' '.join(a.overrides) or 'defaults'})")
    print(f"wall ratio clfops/reference: {o_wall / r_wall:.3f}  (goal <= 1.0 with clfops acc >= 0.93)")
    if base:
        b_acc, b_wall = mean([b[0] for b in base]), mean([b[1] for b in base])
        print(f"baseline  : mean acc {b_acc:.4f}, mean wall {b_wall:.1f} s ({a.baseline_src})")
        print(f"wall ratio baseline/reference: {b_wall / r_wall:.3f}; clfops/baseline: {o_wall / b_wall:.3f}")


if __name__ == "__main__":
    main()
