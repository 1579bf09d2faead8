"""The registered model served for real: `mlflow models serve -m models:/NAME@production --env-manager local`.

Also the README's plain-Python example, `mlflow.pyfunc.load_model("models:/NAME@production")`, in a fresh
interpreter that knows nothing but MLFLOW_TRACKING_URI.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clfops.registry.promote import promote
from clfops.registry.register import register
from test_model_logging import reference_predictions, sample_images

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]  # real subprocesses: a training run / a model server
NAME = "served-classifier"
PING_TIMEOUT_S = 120  # model load imports torch + mlflow; a loaded 2-core machine needs its time


@pytest.fixture(scope="module")
def production(shared_run: dict[str, Any]) -> dict[str, Any]:
    version = str(register(shared_run["store"], shared_run["run_id"], NAME).version)
    assert promote(shared_run["store"], NAME, "production", version=version, force=True).promoted
    return shared_run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_ping(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + PING_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    pytest.fail(f"no answer on {url}/ping within {PING_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    """The server forks workers: signal the whole process group it leads, then make sure it is gone."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_mlflow_models_serve_answers_with_class_names(production: dict[str, Any], tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}@production"]
    cmd += ["--env-manager", "local", "-p", str(port), "-h", "127.0.0.1"]
    # The server execs `uvicorn` from PATH: the venv's bin must be on it, as with an activated venv.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": production["store"], "PATH": path}
    with log.open("w") as out:  # a session of its own: stop() ends the server and its workers as one group
        proc = subprocess.Popen(
            cmd, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for_ping(url, proc, log)
        images = sample_images(2)
        body = json.dumps({"inputs": images.tolist()}).encode()  # the documented request (docs/registry.md)
        request = urllib.request.Request(f"{url}/invocations", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as resp:
            predictions = json.loads(resp.read())["predictions"]
    finally:
        stop(proc)
    classes = production["classes"]
    assert len(predictions) == 2
    expected = reference_predictions(production["model_dir"], images)
    assert [p["class"] for p in predictions] == [classes[i] for i in expected]
    for p in predictions:
        probs = np.array([p[f"p_{c}"] for c in classes])
        assert probs.sum() == pytest.approx(1.0, abs=1e-5) and p["probability"] == pytest.approx(probs.max())


def test_load_model_by_alias_in_a_plain_python_session(production: dict[str, Any], tmp_path: Path) -> None:
    code = (
        "import mlflow, numpy as np\n"
        f"model = mlflow.pyfunc.load_model('models:/{NAME}@production')\n"
        "images = np.zeros((3, 1, 28, 28), dtype=np.uint8)\n"
        "print(model.predict(images)[['class', 'probability']].to_json(orient='records'))\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": production["store"]}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(rows) == 3 and {r["class"] for r in rows} <= set(production["classes"])
