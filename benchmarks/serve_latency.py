"""Serving speed: the torch pyfunc model vs the torch-free ONNX model, in process and over HTTP on loopback.

    .venv/bin/python benchmarks/serve_latency.py [--run-dir RUN_DIR] [--threads 2] [--rounds 3] [--single 200]
        [--batches 20]

The model is RUN_DIR/model, or the default recipe's network (configs/train.yaml, untrained: speed does not depend
on the weights) saved to a temporary folder. Both sides get the same threads (torch.set_num_threads,
onnxruntime intra_op_num_threads; the servers inherit OMP_NUM_THREADS) and the same 10,000 Fashion-MNIST test
images.

- In process: img/s over the 10k images, batch 256: torch fp32 through `class_probabilities` (what the pyfunc
  model and `clfops predict` run) vs onnxruntime on the exported graph (preprocessing included). The two sides
  alternate per chunk of 1,024 images (torch first on even chunks), so load from other processes hits both alike.
- Over HTTP: both models logged to a temporary SQLite store and served by `mlflow models serve --env-manager local`
  on loopback; single-image requests (uint8 array and base64 PNG) give p50/p99 latency, requests of 256 images
  (uint8 arrays, the JSON a client sends) give img/s. Requests alternate between the two servers.
Prints a Markdown table; the CPU and the load average are printed with it, as this machine is shared.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch

from clfops import config as C
from clfops.data.sources import load_source
from clfops.models import create_model
from clfops.serving import onnx_export as E
from clfops.serving.predict import class_probabilities
from clfops.serving.saved_model import Manifest, load_model, save_model

CHUNK = 1024


def default_model(folder: Path) -> Path:
    cfg = C.compose("train", [])
    net = create_model(cfg.model.name, 1, 10, (28, 28), C.to_container(cfg.model.args))
    classes = [str(i) for i in range(10)]
    manifest = Manifest(cfg.model.name, C.to_container(cfg.model.args), classes, 1, [28, 28], [0.286], [0.353])
    return save_model(folder / "model", net.eval(), manifest)


def in_process(net: torch.nn.Module, manifest: Manifest, onnx_file: Path, x: np.ndarray, threads: int, rounds: int):
    sess = E.session(onnx_file, threads)
    t_torch = t_onnx = 0.0
    for r in range(rounds):
        for k, i in enumerate(range(0, len(x), CHUNK)):
            xc = x[i : i + CHUNK]
            order = ("torch", "onnx") if (r + k) % 2 == 0 else ("onnx", "torch")
            for side in order:
                t0 = time.perf_counter()
                if side == "torch":
                    class_probabilities(net, manifest, xc, 256)
                    t_torch += time.perf_counter() - t0
                else:
                    E.onnx_probabilities(sess, xc, 256)
                    t_onnx += time.perf_counter() - t0
    n = rounds * len(x)
    return n / t_torch, n / t_onnx


def log_both(store: str, model_dir: Path, example: np.ndarray) -> dict[str, str]:
    from mlflow.tracking import MlflowClient

    from clfops.registry.model_logging import export_and_log_onnx, log_model

    run_id = MlflowClient(store).create_run(MlflowClient(store).create_experiment("serve-latency")).info.run_id
    return {
        "torch": log_model(store, run_id, model_dir, example),
        "onnx": export_and_log_onnx(store, run_id, model_dir, example),
    }


def serve(uri: str, port: int, store: str, threads: int, log: Path) -> subprocess.Popen:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "PATH": path, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local", "-p", str(port)]
    with log.open("w") as out:
        return subprocess.Popen(
            [*cmd, "-h", "127.0.0.1"], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait(url: str, deadline_s: float = 180) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"no answer from {url}")


def post(url: str, body: bytes) -> float:
    req = urllib.request.Request(f"{url}/invocations", body, {"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=120) as resp:
        resp.read()
        assert resp.status == 200
    return time.perf_counter() - t0


def png_body(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image[0]).save(buf, format="PNG")
    return json.dumps({"inputs": {"image": [base64.b64encode(buf.getvalue()).decode()]}}).encode()


def over_http(urls: dict[str, str], x: np.ndarray, single: int, batches: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {side: {} for side in urls}
    kinds = {"array": lambda i: json.dumps({"inputs": x[i : i + 1].tolist()}).encode(), "png": lambda i: png_body(x[i])}
    for kind, make in kinds.items():
        times: dict[str, list[float]] = {side: [] for side in urls}
        for i in range(single + 10):  # 10 warm-up requests per side are not counted
            sides = list(urls) if i % 2 == 0 else list(reversed(urls))
            for side in sides:
                spent = post(urls[side], make(i))
                if i >= 10:
                    times[side].append(spent)
        for side, t in times.items():
            out[side][f"{kind} p50 ms"] = 1000 * float(np.percentile(t, 50))
            out[side][f"{kind} p99 ms"] = 1000 * float(np.percentile(t, 99))
    bodies = [json.dumps({"inputs": x[i * 256 : (i + 1) * 256].tolist()}).encode() for i in range(batches)]
    spent = {side: 0.0 for side in urls}
    for i, body in enumerate(bodies):
        for side in list(urls) if i % 2 == 0 else list(reversed(urls)):
            spent[side] += post(urls[side], body)
    for side in urls:
        out[side]["batch 256 img/s"] = 256 * batches / spent[side]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--single", type=int, default=200, help="single-image requests per side and format")
    parser.add_argument("--batches", type=int, default=20, help="256-image requests per side")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = load_source("fashion_mnist", None).test.x.numpy()
    with tempfile.TemporaryDirectory(prefix="serve-latency-") as tmp:
        folder = Path(tmp)
        model_dir = args.run_dir / "model" if args.run_dir else default_model(folder)
        net, manifest = load_model(model_dir)
        onnx_file = E.write_onnx(net, manifest, folder / "model.onnx")
        torch_ips, onnx_ips = in_process(net, manifest, onnx_file, x, args.threads, args.rounds)
        store = f"sqlite:///{folder / 'mlflow.db'}"
        os.chdir(folder)  # a SQLite store keeps its artifacts under ./mlruns
        uris = log_both(store, model_dir, x[:2])
        procs, urls = [], {}
        try:
            for side, uri in uris.items():
                port = 5600 + len(urls) + os.getpid() % 200 * 2
                procs.append(serve(uri, port, store, args.threads, folder / f"{side}.log"))
                urls[side] = f"http://127.0.0.1:{port}"
            for url in urls.values():
                wait(url)
            http = over_http(urls, x, args.single, args.batches)
        finally:
            for proc in procs:
                os.killpg(proc.pid, 15)
                proc.wait(timeout=30)
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    name = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("Model name")), "?")
    print(f"CPU: {name}; threads {args.threads}; load average at the end {os.getloadavg()}")
    print("| | torch fp32 (pyfunc) | onnxruntime (ONNX pyfunc) |\n|---|---|---|")
    print(f"| in process, 10k images, batch 256 (img/s) | {torch_ips:,.0f} | {onnx_ips:,.0f} |")
    for key in http["torch"]:
        unit = "img/s" if key.endswith("img/s") else ""
        fmt = "{:,.0f}" if unit else "{:.1f}"
        print(f"| HTTP {key} | {fmt.format(http['torch'][key])} | {fmt.format(http['onnx'][key])} |")


if __name__ == "__main__":
    main()
