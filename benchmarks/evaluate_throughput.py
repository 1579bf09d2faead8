"""Evaluation throughput: clfops' evaluate path vs a plain `torch.inference_mode()` loop, same process, same data.

    .venv/bin/python benchmarks/evaluate_throughput.py [--rounds 4] [--chunk 512] [--batch-size 256] [--record]

Both run the default model (src/clfops/configs/train.yaml: quick_cnn, untrained weights: speed does not depend on them)
over the 10,000 Fashion-MNIST test images, batch 256. The plain loop is what a careful script writes:
slice, float, normalise, forward, collect logits. The clfops side is `clfops.evaluation.evaluate.predict_logits` (the
inference `clfops evaluate` runs) followed by `report_from_arrays` (every number of the report), so the ratio
includes the metric computation; the figures and report.html are a fixed cost reported separately.
The two sides are interleaved in chunks of --chunk images (plain, clfops, clfops, plain, ...), each side timed
chunk by chunk, so load from other processes on this shared 2-core machine hits both alike; the clfops side
also pays the metrics on each round's full 10k logits. Throughput = images / summed seconds of each side.
`--record` appends the result and this command to docs/benchmarks.md under "## Evaluation throughput".
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from clfops import config as C
from clfops.data.sources import load_source
from clfops.evaluation.evaluate import Provenance, evaluate_net, predict_logits
from clfops.evaluation.metrics import prediction_arrays, report_from_arrays
from clfops.hardware import configure_threads, cpu_description
from clfops.models import create_model
from clfops.serving.saved_model import Manifest

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADING = "## Evaluation throughput"


def plain(net: torch.nn.Module, x: torch.Tensor, bs: int, mean: float, std: float) -> torch.Tensor:
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), bs):
            xb = (x[i : i + bs].float() / 255.0 - mean) / std
            out.append(net(xb.contiguous(memory_format=torch.channels_last)))
    return torch.cat(out)


def timed(fn, *args) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def race(net, manifest: Manifest, x, y, bs: int, chunk: int, rounds: int, mean: float, std: float):
    """Summed seconds (plain, clfops) over `rounds` passes of the whole test set, interleaved per chunk."""
    t_plain = t_ours = 0.0
    for r in range(rounds):
        logits = []
        for k, i in enumerate(range(0, len(x), chunk)):
            xc = x[i : i + chunk]
            first_plain = (r + k) % 2 == 0
            if first_plain:
                t_plain += timed(plain, net, xc, bs, mean, std)[0]
            dt, out = timed(predict_logits, net, manifest, xc, bs)
            t_ours, logits = t_ours + dt, [*logits, out]
            if not first_plain:
                t_plain += timed(plain, net, xc, bs, mean, std)[0]
        t_ours += timed(lambda z: report_from_arrays(prediction_arrays(z, y), manifest.classes), torch.cat(logits))[0]
    return t_plain, t_ours


def record(text: str) -> None:
    """Append to docs/benchmarks.md (others write their own sections there: append only, never rewrite);
    the heading is repeated when another section came after ours."""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    current = DOC.read_text() if DOC.exists() else ""
    headings = [line for line in current.splitlines() if line.startswith("## ")]
    block = ("" if headings and headings[-1] == HEADING else f"\n{HEADING}\n") + "\n" + text.rstrip("\n") + "\n"
    with DOC.open("a") as fh:
        fh.write(("" if current else "# Benchmarks\n") + block)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--record", action="store_true")
    a = ap.parse_args()
    threads = configure_threads(None)
    cfg = C.compose("train", [])
    source = load_source(cfg.data.name, cfg.data.root)
    x, y = source.test.x, source.test.y
    mean, std = float(cfg.data.mean[0]), float(cfg.data.std[0])
    torch.manual_seed(0)
    args = C.to_container(cfg.model.args)
    net = create_model(cfg.model.name, 1, 10, (28, 28), args).eval().to(memory_format=torch.channels_last)
    manifest = Manifest(cfg.model.name, args, list(source.classes), 1, [28, 28], [mean], [std])
    plain(net, x[:1024], a.batch_size, mean, std)  # warm-up: oneDNN primitive creation, allocator
    t_plain, t_ours = race(net, manifest, x, y, a.batch_size, a.chunk, a.rounds, mean, std)
    n = len(x) * a.rounds
    ratio = t_plain / t_ours
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        prov = Provenance(source="benchmark", model=cfg.model.name, data="fashion_mnist test", data_sha256="")
        evaluate_net(net, manifest, source.test, Path(tmp), prov, a.batch_size)
        full_s = time.perf_counter() - t0
    lines = [
        f"CPU: {cpu_description()} ({threads} threads), torch {torch.__version__}, model {cfg.model.name}, "
        f"batch {a.batch_size}, {len(x):,} Fashion-MNIST test images x {a.rounds} rounds, chunks of {a.chunk}",
        f"plain inference_mode loop:       {n / t_plain:,.0f} img/s",
        f"clfops predict_logits + metrics: {n / t_ours:,.0f} img/s",
        f"ratio clfops / plain: {ratio:.3f}  (target >= 0.90)",
        f"full evaluate_net (inference + metrics + 4 figures + report.html): {full_s:.2f} s",
    ]
    print("\n".join(lines))
    if a.record:
        cmd = f".venv/bin/python benchmarks/evaluate_throughput.py --rounds {a.rounds} --chunk {a.chunk} --record"
        record(f"`{cmd}` ({time.strftime('%Y-%m-%d')})\n\n```\n" + "\n".join(lines) + "\n```")


if __name__ == "__main__":
    main()
