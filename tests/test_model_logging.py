"""The model a run logs to MLflow: pyfunc from code (no pickle), signature + example, sha256 and class checks.

The run is conftest's `shared_run` (one tiny model per test session); `reference_predictions`, `sample_images` and
`normalised` below are the ground truth the other model tests (ONNX, predict, promote, serving) check against.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from clfops.serving.saved_model import Manifest, ModelFileError, load_model
from conftest import SHARED_RUN_MODEL

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("shared_run_store")]  # shared_run trains and logs a run


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


def _logged_models(shared_run: dict[str, Any]) -> dict[str, Any]:
    c = MlflowClient(shared_run["store"])
    exp_id = c.get_run(shared_run["run_id"]).info.experiment_id
    return {m.name: m for m in c.search_logged_models([exp_id]) if m.source_run_id == shared_run["run_id"]}


def test_run_logs_a_pickle_free_pyfunc_model(shared_run: dict[str, Any]) -> None:
    models = _logged_models(shared_run)
    assert set(models) == {"model", "pytorch_model", "onnx_model"}  # in the run's own experiment, linked to the run
    assert shared_run["model_uri"] == f"models:/{models['model'].model_id}"
    local = Path(mlflow.artifacts.download_artifacts(f"{shared_run['model_uri']}", tracking_uri=shared_run["store"]))
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


def test_signature_names_outputs_and_leaves_inputs_to_the_model(shared_run: dict[str, Any]) -> None:
    model = mlflow.pyfunc.load_model(shared_run["model_uri"])
    assert model.metadata.signature.inputs is None  # arrays and base64 files: the model checks them itself
    names = model.metadata.signature.outputs.input_names()
    assert names == ["class", "probability", *(f"p_{c}" for c in shared_run["classes"])]


def test_pyfunc_predicts_the_same_classes_as_the_in_memory_net(shared_run: dict[str, Any]) -> None:
    model = mlflow.pyfunc.load_model(f"runs:/{shared_run['run_id']}/model")
    images = sample_images(64)
    out = model.predict(images)
    assert list(out.columns) == ["class", "probability", *(f"p_{c}" for c in shared_run["classes"])]
    expected = reference_predictions(shared_run["model_dir"], images)
    assert list(out["class"]) == [shared_run["classes"][i] for i in expected]
    probs = out[[f"p_{c}" for c in shared_run["classes"]]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.allclose(out["probability"], probs.max(axis=1))
    batched = model.predict(images, params={"batch_size": 7})  # the signature's one parameter
    assert list(batched["class"]) == list(out["class"])


def test_unwrapped_model_accepts_other_layouts_and_dtypes(shared_run: dict[str, Any]) -> None:
    inner = mlflow.pyfunc.load_model(shared_run["model_uri"]).unwrap_python_model()
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


def test_loading_checks_class_names(shared_run: dict[str, Any]) -> None:
    right = mlflow.pyfunc.load_model(shared_run["model_uri"], model_config={"expected_classes": shared_run["classes"]})
    assert right.predict(sample_images(2)).shape[0] == 2
    wrong = list(reversed(shared_run["classes"]))
    with pytest.raises(ModelFileError, match="differ from the expected"):
        mlflow.pyfunc.load_model(shared_run["model_uri"], model_config={"expected_classes": wrong})


def test_loading_checks_the_weights_sha256(shared_run: dict[str, Any], tmp_path: Path) -> None:
    local = Path(
        mlflow.artifacts.download_artifacts(
            shared_run["model_uri"], dst_path=str(tmp_path), tracking_uri=shared_run["store"]
        )
    )
    weights = local / "artifacts" / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF  # one flipped bit in the last weight
    weights.write_bytes(bytes(blob))
    with pytest.raises(ModelFileError, match="sha256"):
        mlflow.pyfunc.load_model(str(local))


def test_torch_flavor_loads_when_asked(shared_run: dict[str, Any]) -> None:
    net = mlflow.pytorch.load_model(f"runs:/{shared_run['run_id']}/pytorch_model")  # pickle-based, opt-in
    images = sample_images(16)
    _, manifest = load_model(Path(shared_run["model_dir"]))
    with torch.inference_mode():
        got = net(normalised(torch.from_numpy(images), manifest)).argmax(1).numpy()
    assert (got == reference_predictions(shared_run["model_dir"], images)).all()


def test_register_as_creates_a_tagged_version(shared_run: dict[str, Any]) -> None:
    c = MlflowClient(shared_run["store"])
    version = c.get_model_version(SHARED_RUN_MODEL, shared_run["model_version"])
    assert version.run_id == shared_run["run_id"] and version.source == shared_run["model_uri"]
    assert float(version.tags["test_acc"]) == pytest.approx(shared_run["test_acc"], abs=1e-6)
    assert version.tags["data_sha256"] == shared_run["data_sha256"]
    assert c.get_run(shared_run["run_id"]).info.status == "FINISHED"
