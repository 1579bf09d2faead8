"""Portable models: `clfops export --format onnx`, the torch-free ONNX model training logs, and its registration.

The ONNX model is loaded in a fresh interpreter where `import torch` and `import clfops` fail, and must answer
what clfops' own predict answers.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from clfops.registry.promote import promote
from conftest import run_cli
from test_model_logging import reference_predictions, sample_images

# a training run (conftest's shared_run), an export checked on 10k images, subprocesses
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("shared_run_store")]


def png_base64(image: np.ndarray, size: tuple[int, int] = (28, 28), mode: str = "L") -> str:
    """A (1, H, W) uint8 image as a base64 PNG of another size and mode than the model's."""
    img = Image.fromarray(image[0]).convert(mode).resize(size)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_export_writes_a_checked_onnx_model_with_metadata(shared_run: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "fashion.onnx"
    proc = run_cli(
        "export", str(Path(shared_run["model_dir"]).parent), "--format", "onnx", "--out", str(out), timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    found = re.search(
        r"on (\d+) images: top-1 agrees on ([\d.]+)% .*max probability difference ([\d.e+-]+)", proc.stdout
    )
    assert found, proc.stdout
    images, agree, diff = int(found[1]), float(found[2]), float(found[3])
    assert images == 10000 and agree >= 99.9 and diff <= 1e-4  # the whole Fashion-MNIST test set

    model = onnx.load(str(out))
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["classes"]) == shared_run["classes"]
    assert json.loads(meta["image_size"]) == [28, 28] and meta["channels"] == "1"
    assert meta["run_id"] == shared_run["run_id"]
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert inp.type == "tensor(uint8)" and inp.shape[1:] == [1, 28, 28] and not isinstance(inp.shape[0], int)
    for count in (1, 5):  # the batch dimension is dynamic
        x = sample_images(count)
        probs = sess.run(None, {inp.name: x})[0]
        assert probs.shape == (count, len(shared_run["classes"])) and np.allclose(probs.sum(1), 1, atol=1e-5)
        assert (probs.argmax(1) == reference_predictions(shared_run["model_dir"], x)).all()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["not-a-model"], "'not-a-model': no such folder or .ckpt file, and not an MLflow run id"),
        (["--run-id", "0" * 32, "--out", "x.txt"], "--out x.txt: use a file name ending in .onnx"),
        (["--format", "tflite"], "'tflite' is not 'onnx'"),
    ],
)
def test_export_usage_errors_exit_2_and_write_nothing(args: list[str], message: str, tmp_path: Path) -> None:
    proc = run_cli("export", *args, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_training_logs_a_torch_free_onnx_model(shared_run: dict[str, Any]) -> None:
    c = MlflowClient(shared_run["store"])
    exp_id = c.get_run(shared_run["run_id"]).info.experiment_id
    models = {m.name: m for m in c.search_logged_models([exp_id]) if m.source_run_id == shared_run["run_id"]}
    assert shared_run["onnx_model_uri"] == f"models:/{models['onnx_model'].model_id}"
    local = Path(mlflow.artifacts.download_artifacts(shared_run["onnx_model_uri"], tracking_uri=shared_run["store"]))
    files = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    assert {"onnx_pyfunc.py", "code/image_bytes.py", "artifacts/model.onnx"} <= files, files
    requirements = sorted(re.split("[=<>]", line)[0] for line in (local / "requirements.txt").read_text().split())
    assert requirements == ["mlflow", "numpy", "onnxruntime", "pillow"]
    source = (local / "onnx_pyfunc.py").read_text() + (local / "code" / "image_bytes.py").read_text()
    assert not re.search(r"^\s*(import|from) (torch|clfops)\b", source, re.MULTILINE)


def test_torch_model_carries_clfops_code_and_no_unknown_pin(shared_run: dict[str, Any]) -> None:
    local = Path(mlflow.artifacts.download_artifacts(shared_run["model_uri"], tracking_uri=shared_run["store"]))
    assert (local / "code" / "clfops" / "serving" / "saved_model.py").is_file()
    requirements = (local / "requirements.txt").read_text()
    assert "clfops" not in requirements and "torch==" in requirements and "pillow==" in requirements


def test_onnx_model_predicts_like_clfops_where_torch_and_clfops_cannot_import(
    shared_run: dict[str, Any], tmp_path: Path
) -> None:
    images = sample_images(8)
    np.save(tmp_path / "images.npy", images)
    encoded = [png_base64(images[0], (40, 56), "RGB"), png_base64(images[1], (28, 28), "L")]
    (tmp_path / "encoded.json").write_text(json.dumps(encoded))
    code = (
        "import sys\n"
        "sys.modules['torch'] = None; sys.modules['clfops'] = None  # any import of either now fails\n"
        "import json, mlflow, numpy as np\n"
        f"model = mlflow.pyfunc.load_model({shared_run['onnx_model_uri']!r})\n"
        "arrays = model.predict(np.load('images.npy'))\n"
        "files = model.predict({'image': json.load(open('encoded.json'))})\n"
        "print(json.dumps({'arrays': list(arrays['class']), 'files': list(files['class']),\n"
        "                  'torch': 'torch' in sys.modules and sys.modules['torch'] is not None}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # clfops not even on the path
    env["MLFLOW_TRACKING_URI"] = shared_run["store"]
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["torch"] is False
    classes = shared_run["classes"]
    assert out["arrays"] == [classes[i] for i in reference_predictions(shared_run["model_dir"], images)]

    from clfops.serving.predict import predict_sources
    from clfops.serving.resolve import resolve_model

    for i, text in enumerate(encoded):
        (tmp_path / f"img{i}.png").write_bytes(base64.b64decode(text))
    resolved = resolve_model(str(Path(shared_run["model_dir"]).parent))
    net, manifest = resolved.net, resolved.manifest
    pred = predict_sources(net, manifest, [str(tmp_path / "img0.png"), str(tmp_path / "img1.png")])
    assert out["files"] == [classes[i] for i in pred.probs.argmax(1)]  # what `clfops predict` says of the files


def test_register_onnx_flavor_keeps_one_flavor_per_name(shared_run: dict[str, Any]) -> None:
    proc = run_cli("register", "--run-id", shared_run["run_id"], "--name", "portable", "--flavor", "onnx")
    assert proc.returncode == 0 and "(onnx)" in proc.stdout, proc.stderr
    version = MlflowClient(shared_run["store"]).get_model_version("portable", "1")
    assert version.tags["clfops.flavor"] == "onnx"
    assert version.source == shared_run["onnx_model_uri"]  # the run's ONNX model, not its torch one
    assert promote(shared_run["store"], "portable", "production", version="1", force=True).promoted
    model = mlflow.pyfunc.load_model("models:/portable@production")
    assert type(model.unwrap_python_model()).__name__ == "OnnxClassifier"
    images = sample_images(4)
    expected = [shared_run["classes"][i] for i in reference_predictions(shared_run["model_dir"], images)]
    assert list(model.predict(images)["class"]) == expected

    mixed = run_cli("register", "--run-id", shared_run["run_id"], "--name", "portable")  # the torch model: refused
    assert mixed.returncode == 2, mixed.stderr
    assert "registered model portable holds onnx models, not pyfunc" in mixed.stderr
    listed = run_cli("models", "portable")
    assert listed.returncode == 0 and "production" in listed.stdout
