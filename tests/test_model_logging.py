"""The model a run logs to MLflow: pyfunc from code (no pickle), signature + example, sha256 and class checks.

`shared_run` trains one tiny model per test session (the predict/promote/serving modules reuse it read-only,
each registering under its own model name) so that the registry tests do not each pay for a training run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from clfops import config as C
from clfops.serving.saved_model import Manifest, ModelFileError, load_model
from clfops.training.train import train
from conftest import TINY

pytestmark = pytest.mark.slow  # the module fixture trains and logs a run

AUTO_NAME = "auto-registered"  # tracking.register_as of the shared run


def use_store(monkeypatch: pytest.MonkeyPatch, store: str) -> None:
    """Fluent MLflow calls (pyfunc.load_model on runs:/ or models:/ URIs) read the store from the environment."""
    from mlflow.tracking._tracking_service import utils

    monkeypatch.setattr(utils, "_tracking_uri", None)  # a URI set in-process would take precedence
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)


def shared_run(factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Train (once per session) a tiny model logging the pyfunc, torch and ONNX models; returns summary + store."""
    root = factory.getbasetemp() / "shared-registry-run"
    done = root / "shared.json"
    if done.is_file():
        return json.loads(done.read_text())
    root.mkdir(exist_ok=True)
    store = f"sqlite:///{root / 'mlflow.db'}"
    old = Path.cwd()
    os.chdir(root)  # MLflow puts a SQLite store's artifacts under ./mlruns of the working directory
    try:
        flavors = ["tracking.log_torch_flavor=true", "tracking.log_onnx=true", f"tracking.register_as={AUTO_NAME}"]
        overrides = [f"run.root={root / 'runs'}", f"tracking.uri={store}", *TINY, *flavors]
        summary = train(C.compose("train", overrides))
    finally:
        os.chdir(old)
    summary["store"] = store
    done.write_text(json.dumps(summary))
    return summary


def normalised(images: torch.Tensor, manifest: Manifest) -> torch.Tensor:
    """uint8 (N, C, H, W) -> (x/255 - mean) / std, written out plainly: the reference for clfops' inference path."""
    mean = torch.tensor(manifest.mean).view(1, -1, 1, 1)
    std = torch.tensor(manifest.std).view(1, -1, 1, 1)
    return (images.float() / 255.0 - mean) / std


def reference_predictions(model_dir: str, images: np.ndarray) -> np.ndarray:
    """Class indices from the in-memory net (safetensors + manifest), the ground truth for every path.

    Written out here, not through clfops' own helper: a model trained with augment.test_flip (the default
    recipe) answers with the mean logits of each image and its mirror image."""
    net, manifest = load_model(Path(model_dir))
    with torch.inference_mode():
        x = normalised(torch.from_numpy(images), manifest)
        logits = net(x)
        if manifest.test_flip:
            logits = (logits + net(torch.flip(x, dims=[3]))) / 2
        return logits.argmax(1).numpy()


def sample_images(count: int) -> np.ndarray:
    """The first `count` Fashion-MNIST test images, uint8 (N, 1, 28, 28)."""
    from clfops.data.sources import load_source

    return load_source("fashion_mnist", None).test.x[:count].numpy()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return shared_run(tmp_path_factory)


@pytest.fixture(autouse=True)
def _store_env(run: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    use_store(monkeypatch, run["store"])


def _logged_models(run: dict[str, Any]) -> dict[str, Any]:
    c = MlflowClient(run["store"])
    exp_id = c.get_run(run["run_id"]).info.experiment_id
    return {m.name: m for m in c.search_logged_models([exp_id]) if m.source_run_id == run["run_id"]}


def test_run_logs_a_pickle_free_pyfunc_model(run: dict[str, Any]) -> None:
    models = _logged_models(run)
    assert set(models) == {"model", "pytorch_model", "onnx_model"}  # in the run's own experiment, linked to the run
    assert run["model_uri"] == f"models:/{models['model'].model_id}"
    local = Path(mlflow.artifacts.download_artifacts(f"{run['model_uri']}", tracking_uri=run["store"]))
    files = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    assert {"MLmodel", "pyfunc_model.py", "artifacts/model.safetensors", "artifacts/manifest.json"} <= files
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".pth", ".pt"))], files
    mlmodel = (local / "MLmodel").read_text()
    assert "loader_module: mlflow.pyfunc.loaders.code_model" in mlmodel  # the model is code, not a pickle
    requirements = (local / "requirements.txt").read_text()
    assert "torch==" in requirements and "clfops" not in requirements  # explicit pins, nothing inferred
    assert "code/clfops/serving/pyfunc_model.py" in files  # clfops itself travels as the model's code
    example = np.asarray(json.loads((local / "input_example.json").read_text()))
    assert example.shape == (2, 1, 28, 28)
    assert (example == sample_images(2)).all()  # two real test images


def test_signature_names_outputs_and_leaves_inputs_to_the_model(run: dict[str, Any]) -> None:
    model = mlflow.pyfunc.load_model(run["model_uri"])
    assert model.metadata.signature.inputs is None  # arrays and base64 files: the model checks them itself
    names = model.metadata.signature.outputs.input_names()
    assert names == ["class", "probability", *(f"p_{c}" for c in run["classes"])]


def test_pyfunc_predicts_the_same_classes_as_the_in_memory_net(run: dict[str, Any]) -> None:
    model = mlflow.pyfunc.load_model(f"runs:/{run['run_id']}/model")
    images = sample_images(64)
    out = model.predict(images)
    assert list(out.columns) == ["class", "probability", *(f"p_{c}" for c in run["classes"])]
    expected = reference_predictions(run["model_dir"], images)
    assert list(out["class"]) == [run["classes"][i] for i in expected]
    probs = out[[f"p_{c}" for c in run["classes"]]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.allclose(out["probability"], probs.max(axis=1))
    batched = model.predict(images, params={"batch_size": 7})  # the signature's one parameter
    assert list(batched["class"]) == list(out["class"])


def test_unwrapped_model_accepts_other_layouts_and_dtypes(run: dict[str, Any]) -> None:
    inner = mlflow.pyfunc.load_model(run["model_uri"]).unwrap_python_model()
    images = sample_images(8)
    want = list(inner.predict(None, images)["class"])
    hw = images[:, 0]
    for variant in (
        hw,  # (N, H, W)
        hw.astype(np.float64),  # float on the 0-255 scale
        hw[..., None],  # (N, H, W, 1)
        np.repeat(hw[..., None], 3, axis=3),  # RGB: converted to the model's 1 channel (luma)
        [img for img in images],  # a list of arrays, as JSON gives
        pd.DataFrame({"image": [img.tolist() for img in hw]}),  # one column of images
    ):
        assert list(inner.predict(None, variant)["class"]) == want
    with pytest.raises(MlflowException, match=r"0\.\.1 floats"):  # INVALID_PARAMETER_VALUE: HTTP 400
        inner.predict(None, hw / 255.0)
    with pytest.raises(MlflowException, match="expected images shaped"):
        inner.predict(None, np.zeros((2, 5, 28, 28), dtype=np.uint8))


def test_loading_checks_class_names(run: dict[str, Any]) -> None:
    right = mlflow.pyfunc.load_model(run["model_uri"], model_config={"expected_classes": run["classes"]})
    assert right.predict(sample_images(2)).shape[0] == 2
    wrong = list(reversed(run["classes"]))
    with pytest.raises(ModelFileError, match="differ from the expected"):
        mlflow.pyfunc.load_model(run["model_uri"], model_config={"expected_classes": wrong})


def test_loading_checks_the_weights_sha256(run: dict[str, Any], tmp_path: Path) -> None:
    local = Path(
        mlflow.artifacts.download_artifacts(run["model_uri"], dst_path=str(tmp_path), tracking_uri=run["store"])
    )
    weights = local / "artifacts" / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF  # one flipped bit in the last weight
    weights.write_bytes(bytes(blob))
    with pytest.raises(ModelFileError, match="sha256"):
        mlflow.pyfunc.load_model(str(local))


def test_torch_flavor_loads_when_asked(run: dict[str, Any]) -> None:
    net = mlflow.pytorch.load_model(f"runs:/{run['run_id']}/pytorch_model")  # pickle-based, opt-in
    images = sample_images(16)
    _, manifest = load_model(Path(run["model_dir"]))
    with torch.inference_mode():
        got = net(normalised(torch.from_numpy(images), manifest)).argmax(1).numpy()
    assert (got == reference_predictions(run["model_dir"], images)).all()


def test_register_as_creates_a_tagged_version(run: dict[str, Any]) -> None:
    c = MlflowClient(run["store"])
    version = c.get_model_version(AUTO_NAME, run["model_version"])
    assert version.run_id == run["run_id"] and version.source == run["model_uri"]
    assert float(version.tags["test_acc"]) == pytest.approx(run["test_acc"], abs=1e-6)
    assert version.tags["data_sha256"] == run["data_sha256"]
    assert c.get_run(run["run_id"]).info.status == "FINISHED"
