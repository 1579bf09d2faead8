"""ONNX export time: clfops' export (graph cache warm, serving/onnx_cache.py) vs a plain `torch.onnx.export`.

    .venv/bin/python benchmarks/onnx_export_time.py [--rounds 3] [--width 24]

Each contestant is a fresh process (imports count: a training run exports once, at its end), alternating plain,
clfops, plain, clfops… The plain one is what a user writes without clfops: the dynamo exporter (torch's
maintained one, `optimize=True`, its default) on the same network with the same uint8-in, probabilities-out
wrapper, then the serialized bytes. clfops' includes its metadata, the onnx checker and the onnxruntime check of
a cached graph. A first clfops round fills the cache (a cold export: two exports, see onnx_cache.py) and is
reported apart. Prints each process's seconds from its first import to the bytes, and the median of each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import sys, time
t0 = time.perf_counter()
import torch
from clfops.models import create_model
from clfops.serving import onnx_export as E
from clfops.serving.saved_model import Manifest
width, mode = int(sys.argv[1]), sys.argv[2]
torch.manual_seed(0)
net = create_model("quick_cnn", 1, 10, (28, 28), {"width": width}).eval()
manifest = Manifest(model="quick_cnn", model_args={"width": width}, classes=[str(i) for i in range(10)],
                    in_channels=1, image_size=[28, 28], mean=[0.286], std=[0.353], test_flip=True,
                    data_sha256="0" * 64, run_id="bench", temperature=1.2)
if mode == "clfops":
    blob = E.export_bytes(net, manifest)
else:
    example = torch.zeros((2, 1, 28, 28), dtype=torch.uint8)
    program = torch.onnx.export(E.ProbabilityModel(net, manifest), (example,), dynamo=True,
                                dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1)}})
    blob = program.model_proto.SerializeToString()
print(f"{time.perf_counter() - t0:.3f} {len(blob)}")
"""


def run(mode: str, width: int, cache: str) -> float:
    cmd = [sys.executable, "-c", CHILD, str(width), mode]
    env = {**os.environ, "CLFOPS_CACHE_DIR": cache}  # a fresh cache per benchmark, filled by its first round
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    return float(out.split()[-2])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--width", type=int, default=24)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        cold = run("clfops", a.width, cache)
        print(f"clfops, cold cache (fills it): {cold:.2f} s", flush=True)
        plain, ours = [], []
        for i in range(a.rounds):
            plain.append(run("plain", a.width, cache))
            ours.append(run("clfops", a.width, cache))
            print(
                f"round {i + 1}: plain torch.onnx.export {plain[-1]:.2f} s, clfops (cache) {ours[-1]:.2f} s", flush=True
            )
    p, o = statistics.median(plain), statistics.median(ours)
    print(f"median: plain {p:.2f} s, clfops {o:.2f} s, ratio clfops/plain {o / p:.3f}")


if __name__ == "__main__":
    main()
