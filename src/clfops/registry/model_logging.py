"""Logging a run's model to MLflow: the safe pyfunc model (model.safetensors + manifest.json, served by
serving/pyfunc_model.py as a "model from code"), its signature and requirements, and the torch-free ONNX model
(serving/onnx_pyfunc.py + model.onnx, see log_onnx_model).

The torch model carries clfops' own code (MLflow `code_paths`: the clfops package, ~0.5 MB) instead of pinning
a clfops release no index has; its requirements are the PyPI packages that code imports when serving. Neither
model has an input schema: both take base64 image files as well as uint8 arrays, which one tensor or column
schema cannot express, and check their input themselves (a bad request is HTTP 400 with one line)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clfops.tracking.registry import MODEL_NAME, TORCH_MODEL_NAME, fluent_store
from clfops.tracking.store import TrackingError, client, first_line

log = logging.getLogger("clfops")
ONNX_MODEL_NAME = "onnx_model"  # the run's torch-free model, beside MODEL_NAME ("model")


TORCH_REQUIREMENTS = ("torch", "safetensors", "numpy", "pandas", "pillow", "mlflow")  # what serving/ imports
ONNX_REQUIREMENTS = ("onnxruntime", "numpy", "pillow", "mlflow")  # what serving/onnx_pyfunc.py imports


def _pip_requirements(names: tuple[str, ...] = TORCH_REQUIREMENTS) -> list[str]:
    """Explicit pins of the installed versions: MLflow's requirement inference imports the model in a
    subprocess (seconds). `torch==2.13.0` (local label dropped) also matches the CPU build 2.13.0+cpu."""
    from importlib.metadata import version

    return [f"{name}=={version(name).split('+')[0]}" for name in names]


def _source_file(module: str) -> Path:
    """A clfops file MLflow logs as a model's code, found without importing it (importing would tie the
    registry to serving's import graph; the file is data here)."""
    from importlib.util import find_spec

    spec = find_spec(module)
    assert spec is not None and spec.origin is not None
    return Path(spec.origin)


def model_signature(classes: list[str]) -> Any:
    """Named outputs and the batch_size parameter; no input schema (see the module docstring)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    cols = [ColSpec("string", "class"), ColSpec("double", "probability")]
    outputs = Schema(cols + [ColSpec("double", f"p_{name}") for name in classes])
    params = ParamSchema([ParamSpec("batch_size", "long", 512)])
    return ModelSignature(inputs=None, outputs=outputs, params=params)


@dataclass(frozen=True)
class PyfuncFromCode:
    """One pyfunc model logged from code: the torch model and the ONNX model differ only in these."""

    name: str  # the logged model's name in its run (MODEL_NAME, ONNX_MODEL_NAME)
    what: str  # how the error message names it
    python_model: Path  # the file MLflow logs as the model (serving/pyfunc_model.py, serving/onnx_pyfunc.py)
    artifacts: dict[str, str]
    code_paths: list[str]
    requirements: tuple[str, ...]
    tags: dict[str, str]
    model_config: dict[str, Any] | None = None  # the keys load_model(..., model_config=...) may set


def log_model(uri: str | None, run_id: str, model_dir: Path, input_example: Any, torch_net: Any = None) -> str:
    """Log `model_dir` (model.safetensors + manifest.json) as a pyfunc model from code; returns its models:/ URI.

    `input_example`: uint8 (N, C, H, W) real images (2 are enough). `torch_net` also logs mlflow.pytorch.
    """
    from clfops.serving.saved_model import MANIFEST, WEIGHTS, read_manifest

    manifest = read_manifest(model_dir)
    model = PyfuncFromCode(
        name=MODEL_NAME,
        what="model",
        python_model=_source_file("clfops.serving.pyfunc_model"),
        artifacts={"weights": str(model_dir / WEIGHTS), "manifest": str(model_dir / MANIFEST)},
        code_paths=[str(_source_file("clfops").parent)],  # the model's code: clfops itself
        requirements=TORCH_REQUIREMENTS,
        tags={"clfops.classes": ",".join(manifest.classes)[:5000], "clfops.weights_sha256": manifest.sha256},
        model_config={"expected_classes": None},  # load_model(..., model_config={"expected_classes": [...]})
    )
    with fluent_store(uri) as store:
        model_uri = _log_pyfunc(store, run_id, model, manifest.classes, input_example)
        if torch_net is not None:  # pickle-based: only for users who ask for mlflow.pytorch.load_model
            _log_torch_flavor(store, run_id, torch_net)
    return model_uri


def log_onnx_model(uri: str | None, run_id: str, onnx_file: Path, classes: list[str], input_example: Any) -> str:
    """Log `onnx_file` (from serving/onnx_export.py) as the torch-free pyfunc model ONNX_MODEL_NAME of the run:
    serving/onnx_pyfunc.py as its code, clfops/image_bytes.py beside it, requirements onnxruntime, numpy,
    Pillow, mlflow. Returns its models:/ URI."""
    model = PyfuncFromCode(
        name=ONNX_MODEL_NAME,
        what="ONNX model",
        python_model=_source_file("clfops.serving.onnx_pyfunc"),
        artifacts={"onnx": str(onnx_file)},
        code_paths=[str(_source_file("clfops.image_bytes"))],
        requirements=ONNX_REQUIREMENTS,
        tags={"clfops.flavor": "onnx"},
    )
    with fluent_store(uri) as store:
        return _log_pyfunc(store, run_id, model, classes, input_example)


def _log_pyfunc(store: str, run_id: str, model: PyfuncFromCode, classes: list[str], input_example: Any) -> str:
    """Log `model` into run `run_id` of `store` (inside fluent_store); returns its models:/ URI."""
    import mlflow
    from mlflow.models import Model

    try:
        info = Model.log(
            artifact_path=None,
            name=model.name,
            flavor=mlflow.pyfunc,
            run_id=run_id,
            model_id=_new_logged_model(store, run_id, model.name, model.tags),
            python_model=str(model.python_model),
            artifacts=model.artifacts,
            code_paths=model.code_paths,
            signature=model_signature(classes),
            input_example=input_example,
            pip_requirements=_pip_requirements(model.requirements),
            model_config=model.model_config,
        )
    except Exception as err:
        raise TrackingError(f"cannot log the {model.what} of run {run_id}: {first_line(err)}") from None
    return f"models:/{info.model_id}"


def _log_torch_flavor(store: str, run_id: str, torch_net: Any) -> None:
    """The mlflow.pytorch model TORCH_MODEL_NAME beside the pyfunc one (a pickle: only on request)."""
    import mlflow
    from mlflow.models import Model

    try:
        Model.log(
            artifact_path=None,
            name=TORCH_MODEL_NAME,
            flavor=mlflow.pytorch,
            run_id=run_id,
            model_id=_new_logged_model(store, run_id, TORCH_MODEL_NAME),
            pytorch_model=torch_net,
            serialization_format="pickle",  # MLflow 3's default, pt2, needs a traced example input
            pip_requirements=_pip_requirements(),
        )
    except Exception as err:
        raise TrackingError(f"cannot log the model of run {run_id}: {first_line(err)}") from None


def _new_logged_model(store: str, run_id: str, name: str, tags: dict[str, str] | None = None) -> str:
    """A logged model `name` of run `run_id`, created explicitly in the run's experiment (left to itself MLflow
    files it under the fluent API's current experiment, Default, away from the run it belongs to); its id."""
    import mlflow

    experiment_id = client(store).get_run(run_id).info.experiment_id
    return mlflow.initialize_logged_model(name, run_id, tags, experiment_id=experiment_id).model_id


def export_and_log_onnx(uri: str | None, run_id: str, model_dir: Path, input_example: Any) -> str:
    """Export the run's saved model (model_dir) to ONNX and log it (log_onnx_model); returns its models:/ URI.

    The export is checked against torch on `input_example` (training's 2 test images: the full test-set check is
    `clfops export`'s, tens of seconds). Needs the `onnx` extra (onnx, onnxscript, onnxruntime)."""
    import shutil

    import numpy as np

    from clfops.serving.onnx_export import agreement, export_to_temp
    from clfops.serving.saved_model import load_model

    net, manifest = load_model(model_dir)
    onnx_file = export_to_temp(net, manifest)
    try:
        if input_example is not None:
            check = agreement(onnx_file, net, manifest, np.asarray(input_example))
            if not check.ok:
                raise TrackingError(f"the ONNX export of run {run_id} disagrees with torch: {check}")
        return log_onnx_model(uri, run_id, onnx_file, list(manifest.classes), input_example)
    finally:
        shutil.rmtree(onnx_file.parent, ignore_errors=True)
