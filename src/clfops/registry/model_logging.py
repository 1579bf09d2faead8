"""Logging a run's model to MLflow: the safe pyfunc model (model.safetensors + manifest.json, served by
serving/pyfunc_model.py as a "model from code"), its signature and requirements."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from clfops.tracking.registry import MODEL_NAME, TORCH_MODEL_NAME, fluent_store
from clfops.tracking.store import TrackingError, client, first_line

log = logging.getLogger("clfops")


def _pip_requirements() -> list[str]:
    """Explicit pins: MLflow's requirement inference imports the model in a subprocess (seconds)."""
    from importlib.metadata import version
    from importlib.metadata import version as _dist_version

    pins = [f"{name}=={version(name).split('+')[0]}" for name in ("torch", "safetensors", "numpy", "pandas", "mlflow")]
    return [
        *pins,
        f"clfops=={_dist_version('clfops')}",
    ]  # clfops: install it from its repository for other env managers


def _pyfunc_model_file() -> Path:
    """The file MLflow logs as the model's code, found without importing it (importing would tie the registry
    to serving's import graph; the file is data here)."""
    from importlib.util import find_spec

    spec = find_spec("clfops.serving.pyfunc_model")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin)


def model_signature(classes: list[str], channels: int, size: tuple[int, int]) -> Any:
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    inputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, channels, size[0], size[1]))])
    cols = [ColSpec("string", "class"), ColSpec("double", "probability")]
    outputs = Schema(cols + [ColSpec("double", f"p_{name}") for name in classes])
    params = ParamSchema([ParamSpec("batch_size", "long", 512)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def log_model(uri: str | None, run_id: str, model_dir: Path, input_example: Any, torch_net: Any = None) -> str:
    """Log `model_dir` (model.safetensors + manifest.json) as a pyfunc model from code; returns its models:/ URI.

    `input_example`: uint8 (N, C, H, W) real images (2 are enough). `torch_net` also logs mlflow.pytorch.
    """
    with fluent_store(uri) as store:
        return _log_model(store, run_id, model_dir, input_example, torch_net)


def _log_model(uri: str, run_id: str, model_dir: Path, input_example: Any, torch_net: Any) -> str:
    import mlflow
    from mlflow.models import Model

    from clfops.serving.saved_model import MANIFEST, WEIGHTS, read_manifest

    manifest = read_manifest(model_dir)
    size = (int(manifest.image_size[0]), int(manifest.image_size[1]))
    tags = {"clfops.classes": ",".join(manifest.classes)[:5000], "clfops.weights_sha256": manifest.sha256}
    try:
        # Created explicitly in the run's experiment: left to itself MLflow files it under the fluent
        # API's current experiment (Default), away from the run it belongs to.
        experiment_id = client(uri).get_run(run_id).info.experiment_id
        logged = mlflow.initialize_logged_model(MODEL_NAME, run_id, tags, experiment_id=experiment_id)
        info = Model.log(
            artifact_path=None,
            name=MODEL_NAME,
            flavor=mlflow.pyfunc,
            run_id=run_id,
            model_id=logged.model_id,
            python_model=str(_pyfunc_model_file()),
            artifacts={"weights": str(model_dir / WEIGHTS), "manifest": str(model_dir / MANIFEST)},
            signature=model_signature(manifest.classes, manifest.in_channels, size),
            input_example=input_example,
            pip_requirements=_pip_requirements(),
            # Declared so that load_model(..., model_config={"expected_classes": [...]}) may set it.
            model_config={"expected_classes": None},
        )
        if torch_net is not None:  # pickle-based: only for users who ask for mlflow.pytorch.load_model
            torch_logged = mlflow.initialize_logged_model(TORCH_MODEL_NAME, run_id, experiment_id=experiment_id)
            Model.log(
                artifact_path=None,
                name=TORCH_MODEL_NAME,
                flavor=mlflow.pytorch,
                run_id=run_id,
                model_id=torch_logged.model_id,
                pytorch_model=torch_net,
                serialization_format="pickle",  # MLflow 3's default, pt2, needs a traced example input
                pip_requirements=_pip_requirements(),
            )
    except Exception as err:
        raise TrackingError(f"cannot log the model of run {run_id}: {first_line(err)}") from None
    return f"models:/{info.model_id}"
