"""Images as bytes over REST: both served models (the torch pyfunc and the torch-free ONNX one, each under
`mlflow models serve --env-manager local` on loopback) take base64 PNG/JPEG/WebP files of any size and mode,
in `inputs` and in `dataframe_split`, as well as uint8 arrays, and answer what `clfops predict` says of the same
files. Bad requests get HTTP 400 with one message, and the server keeps serving.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from clfops.serving.predict import predict_sources
from clfops.serving.resolve import resolve_model
from test_model_logging import sample_images
from test_serving import free_port, stop, wait_for_ping

pytestmark = pytest.mark.slow  # a training run, two model servers
MODELS = ("model_uri", "onnx_model_uri")  # the torch pyfunc model, the ONNX model


def image_files(folder: Path) -> list[Path]:
    """Real test images as files of other sizes, modes and formats than the model's (1, 28, 28)."""
    x = sample_images(4)[:, 0]
    specs = [("png", "RGB", (56, 40)), ("jpeg", "L", (28, 28)), ("webp", "RGBA", (33, 33)), ("png", "I;16", (20, 30))]
    paths = []
    for i, (fmt, mode, size) in enumerate(specs):
        img = Image.fromarray(x[i]).resize(size)
        img = Image.fromarray(np.asarray(img).astype(np.uint16) * 257) if mode == "I;16" else img.convert(mode)
        path = folder / f"image{i}.{fmt}"
        img.save(path, format=fmt.upper())
        paths.append(path)
    return paths


def post(url: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"{url}/invocations", json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def served(shared_run: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Both models of the shared run behind their own server; the files and what `clfops predict` says of them."""
    folder = tmp_path_factory.mktemp("rest")
    files = image_files(folder)
    resolved = resolve_model(str(Path(shared_run["model_dir"]).parent))
    net, manifest = resolved.net, resolved.manifest
    expected = [
        shared_run["classes"][i] for i in predict_sources(net, manifest, [str(p) for p in files]).probs.argmax(1)
    ]
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # the server execs uvicorn
    env = {**os.environ, "MLFLOW_TRACKING_URI": shared_run["store"], "PATH": path}
    servers = {}
    try:
        for key in MODELS:
            port, log = free_port(), folder / f"{key}.log"
            cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", shared_run[key], "--env-manager", "local"]
            with log.open("w") as out:
                proc = subprocess.Popen(
                    [*cmd, "-p", str(port), "-h", "127.0.0.1"],
                    env=env,
                    cwd=folder,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            servers[key] = (f"http://127.0.0.1:{port}", proc, log)
        for url, proc, log in servers.values():
            wait_for_ping(url, proc, log)
        encoded = [base64.b64encode(p.read_bytes()).decode() for p in files]
        yield {
            "urls": {k: v[0] for k, v in servers.items()},
            "encoded": encoded,
            "expected": expected,
            "run": shared_run,
        }
    finally:
        for _, proc, _ in servers.values():
            stop(proc)


@pytest.mark.parametrize("model", MODELS)
def test_base64_files_in_inputs_and_dataframe_split(served: dict[str, Any], model: str) -> None:
    url, encoded = served["urls"][model], served["encoded"]
    status, body = post(url, {"inputs": {"image": encoded}})
    assert status == 200, body
    assert [p["class"] for p in body["predictions"]] == served["expected"]
    status, body = post(url, {"dataframe_split": {"columns": ["image"], "data": [[e] for e in encoded]}})
    assert status == 200, body
    assert [p["class"] for p in body["predictions"]] == served["expected"]


@pytest.mark.parametrize("model", MODELS)
def test_uint8_arrays_still_work(served: dict[str, Any], model: str) -> None:
    from test_model_logging import reference_predictions

    images = sample_images(3)
    status, body = post(served["urls"][model], {"inputs": images.tolist()})
    assert status == 200, body
    run = served["run"]
    assert [p["class"] for p in body["predictions"]] == [
        run["classes"][i] for i in reference_predictions(run["model_dir"], images)
    ]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"inputs": {"image": ["aGVsbG8gd29ybGQ="]}}, "image 0: unreadable image"),  # base64 of "hello world"
        ({"inputs": {"image": ["not base64 at all!"]}}, "image 0: not base64 text"),
        ({"inputs": np.zeros((2, 5, 7, 7), dtype=np.uint8).tolist()}, "shape"),
        ({"inputs": {"image": []}}, "empty batch"),
    ],
    ids=["undecodable", "not-base64", "wrong-shape", "empty"],
)
def test_bad_requests_get_400_and_the_server_keeps_serving(
    served: dict[str, Any], model: str, payload: dict[str, Any], message: str
) -> None:
    url = served["urls"][model]
    status, body = post(url, payload)
    assert status == 400, body
    # MLflow puts "Failed to predict data '<the parsed input>'." before the model's own one-line message.
    assert body["error_code"] == "INVALID_PARAMETER_VALUE"
    last = body["message"].splitlines()[-1]
    assert last.startswith("Error: ") and message in last, body["message"]
    status, body = post(url, {"inputs": {"image": served["encoded"][:1]}})
    assert status == 200 and body["predictions"][0]["class"] == served["expected"][0]
