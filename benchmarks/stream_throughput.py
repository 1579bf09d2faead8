"""Streaming vs in-memory training throughput on Fashion-MNIST: same model, same steps, same process.

    .venv/bin/python benchmarks/stream_throughput.py [--steps 40] [--chunk 5] [--shuffle-window 0] [--record]

`clfops data pack fashion_mnist` shards go to a temp folder (local disk, litdata chunks of 64 MB); the
streaming side reads them with `data=stream`'s own train loader (`stream.StreamLoader`, shuffled, in the main
process), the in-memory side with `loader.train_loader` (the default path). Each step is the same
training step of the default model (fast_cnn, channels_last, AdamW): uint8 -> float, normalise, forward,
loss, backward, optimizer step. The sides alternate every --chunk steps, each timed chunk by chunk, so load
from other jobs on the shared 2 cores hits both alike. Also reported: the loaders alone (no model), which is
the data path's own ceiling. `--record` appends the result and this command to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from clfops import config as C
from clfops.data.loader import make_splits, train_loader
from clfops.data.pack import pack
from clfops.data.sources import load_source
from clfops.data.stream import S3Options, stream_loaders
from clfops.hardware import configure_threads, cpu_description
from clfops.models import create_model

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADING = "## Streaming vs in-memory data"


def forever(loader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches across epochs (set_epoch where the loader has a sampler, as Lightning does)."""
    for epoch in itertools.count():
        if hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        yield from loader


def run_chunk(batches, steps: int, step) -> tuple[float, int]:
    t0, n = time.perf_counter(), 0
    for _ in range(steps):
        x, y = next(batches)
        step(x, y)
        n += len(y)
    return time.perf_counter() - t0, n


def make_step(net: torch.nn.Module, mean: float, std: float):
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        xb = ((x.float() / 255.0 - mean) / std).contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(net(xb), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def race(memory, stream, steps: int, chunk: int, step) -> dict[str, float]:
    """img/s of each side over `steps` steps, alternating every `chunk` steps (who goes first alternates too)."""
    seconds, images = {"memory": 0.0, "stream": 0.0}, {"memory": 0, "stream": 0}
    sides = {"memory": memory, "stream": stream}
    for k in range(steps // chunk):
        for name in ("memory", "stream") if k % 2 == 0 else ("stream", "memory"):
            dt, n = run_chunk(sides[name], chunk, step)
            seconds[name] += dt
            images[name] += n
    return {name: images[name] / seconds[name] for name in sides}


def record(text: str) -> None:
    """Append to docs/benchmarks.md (append only; the heading again when another section came after ours)."""
    current = DOC.read_text() if DOC.exists() else ""
    headings = [line for line in current.splitlines() if line.startswith("## ")]
    block = ("" if headings and headings[-1] == HEADING else f"\n{HEADING}\n") + "\n" + text.rstrip("\n") + "\n"
    with DOC.open("a") as fh:
        fh.write(block)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--chunk", type=int, default=5)
    ap.add_argument("--shuffle-window", type=int, default=0, help="data.shuffle_window: 0 (full) or N items")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--record", action="store_true")
    a = ap.parse_args()
    threads = configure_threads(None)
    cfg = C.compose("train", [])
    source = load_source(cfg.data.name, cfg.data.root)
    splits = make_splits(source, cfg.data.val_fraction, cfg.seed, None)
    mean, std = float(cfg.data.mean[0]), float(cfg.data.std[0])
    torch.manual_seed(0)
    net = create_model(cfg.model.name, 1, 10, (28, 28), C.to_container(cfg.model.args))
    net = net.to(memory_format=torch.channels_last).train()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        pack("fashion_mnist", f"{tmp}/shards", cfg.data.val_fraction, cfg.seed, "64MB", S3Options.from_env(), None)
        pack_s = time.perf_counter() - t0
        window = f"data.shuffle_window={a.shuffle_window}"
        overrides = [f"data.root={tmp}/shards", f"data.batch_size={a.batch_size}", window]
        data = C.compose("train", ["data=stream", *overrides]).data
        stream_dl, _ = stream_loaders(data, cfg.seed)
        memory_dl = train_loader(splits.train, a.batch_size, cfg.seed)
        memory, stream = forever(memory_dl), forever(stream_dl)
        step = make_step(net, mean, std)
        run_chunk(memory, 5, step)  # warm-up: oneDNN primitives, allocator
        run_chunk(stream, 5, step)  # warm-up: the first chunk read
        loaders_only = race(memory, stream, a.steps, a.chunk, lambda x, y: None)
        training = race(memory, stream, a.steps, a.chunk, step)
    lines = [
        f"CPU: {cpu_description()} ({threads} threads), torch {torch.__version__}, model {cfg.model.name}, "
        f"batch {a.batch_size}, {a.steps} steps a side alternating every {a.chunk}, shards on local disk, "
        f"shuffle_window {a.shuffle_window}",
        f"pack fashion_mnist (70k images -> train/val/test shards): {pack_s:.1f} s",
        f"loaders alone:  in-memory {loaders_only['memory']:,.0f} img/s, streaming {loaders_only['stream']:,.0f} img/s",
        f"training steps: in-memory {training['memory']:,.0f} img/s, streaming {training['stream']:,.0f} img/s",
        f"ratio streaming / in-memory (training): {training['stream'] / training['memory']:.3f}",
    ]
    print("\n".join(lines))
    if a.record:
        args = f"--steps {a.steps} --chunk {a.chunk} --shuffle-window {a.shuffle_window}"
        cmd = f".venv/bin/python benchmarks/stream_throughput.py {args} --record"
        record(f"`{cmd}` ({time.strftime('%Y-%m-%d')})\n\n```\n" + "\n".join(lines) + "\n```")


if __name__ == "__main__":
    main()
