"""The Python API: `clfops.train`, `clfops.evaluate`, `clfops.predict`, `clfops.load_model`.

Each function is the CLI verb without the command line: the same config composition, the same train /
evaluate / predict functions, the same results, returned as typed values instead of printed. Mistakes raise
`clfops.UserError` subclasses (never sys.exit), so a notebook shows one line and keeps its state.

`model` is everything the CLI accepts: an MLflow run id, a run dir, a model dir (RUN_DIR/model), a Lightning
checkpoint, or a runs:/ or models:/ URI.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the heavy types only for annotations: `import clfops` does not load torch
    import numpy as np
    import pandas as pd
    import torch
    from torch.nn import Module as Probabilities  # the class is built at first use: _probabilities_class

    from clfops.evaluation.evaluate import EvalResult
    from clfops.serving.saved_model import Manifest


@dataclass(frozen=True)
class RunResult:
    """What `clfops.train` returns: the headline numbers and where the run is; `summary` is summary.json."""

    test_acc: float
    best_val_acc: float | None
    run_dir: Path
    run_id: str | None
    model_uri: str | None  # runs:/ID/model, or the logged model's models:/ URI; None without tracking
    summary: dict[str, Any]


def train(overrides: list[str] | None = None, *, config_dir: str | Path | None = None) -> RunResult:
    """Compose the config exactly as `clfops train OVERRIDES` (plus `--config-dir`) does, then train one run."""
    from clfops.config import compose
    from clfops.training.train import train as run_train

    given = list(overrides or [])
    if "optimizer.lr=auto" in given:  # as the CLI: an LR range test picks the value first
        from clfops.tuning.lr_find import resolve_lr_auto

        given, _ = resolve_lr_auto(given)
    dirs = _config_dirs(config_dir)
    summary = run_train(compose("train", given, dirs), given)
    run_id = summary.get("run_id")
    model_uri = summary.get("model_uri") or (f"runs:/{run_id}/model" if run_id and summary.get("model_id") else None)
    return RunResult(
        test_acc=float(summary["test_acc"]),
        best_val_acc=summary.get("best_val_acc"),
        run_dir=Path(summary["run_dir"]),
        run_id=run_id,
        model_uri=model_uri,
        summary=summary,
    )


def evaluate(
    model: str | Path,
    *,
    data: str = "test",
    batch_size: int = 256,
    log_mlflow: bool = False,
    out: str | Path | None = None,
    tracking_uri: str | None = None,
) -> EvalResult:
    """`clfops evaluate`: the report files (in `out`, default RUN_DIR/eval or ./eval) and the metrics.

    `data`: test | val (the model's own run's split) | a data set name (fashion_mnist, ...) | an image folder."""
    from clfops.evaluation.evaluate import EvalRequest
    from clfops.evaluation.evaluate import evaluate as run_evaluate
    from clfops.serving.resolve import ModelRef

    ref = ModelRef.guess(str(model))
    request = EvalRequest(
        run_dir=Path(ref.value) if ref.kind == "run_dir" else None,
        checkpoint=Path(ref.value) if ref.kind == "checkpoint" else None,
        run_id=ref.value if ref.kind == "run_id" else None,
        model_uri=ref.value if ref.kind == "model_uri" else None,
        data=data,
        batch_size=batch_size,
        out=Path(out) if out is not None else None,
        log_mlflow=log_mlflow,
        tracking_uri=tracking_uri,
    )
    return run_evaluate(request)


def load_model(model: str | Path, *, tracking_uri: str | None = None) -> Probabilities:
    """The model as a torch module: uint8 images (N, C, H, W) in, class probabilities (N, K) out; `.classes`."""
    from clfops.serving.resolve import resolve_model

    resolved = resolve_model(str(model), tracking_uri)
    return _probabilities_module(resolved.net, resolved.manifest)


def predict(
    model: str | Path | Probabilities,
    images: Any,
    *,
    top_k: int = 1,
    batch_size: int = 256,
    tracking_uri: str | None = None,
) -> pd.DataFrame:
    """Class names and probabilities, one row per image: `class`, `probability`, `class_2`/`probability_2`…
    up to `top_k`, then `p_<class>` for every class (and `file` when images came from files).

    `images`: a path (image, folder searched recursively, IDX file), a list of paths, a uint8 numpy array
    ((H, W[, C]) one image; (N, H, W[, C]) or (N, C, H, W) several) or a PIL image (or a list of them)."""
    import numpy as np

    from clfops.serving import predict as P

    if top_k < 1:
        raise P.PredictError(f"top_k={top_k}: must be >= 1")
    given_module = isinstance(model, _probabilities_class())
    probs_module = model if given_module else load_model(model, tracking_uri=tracking_uri)
    net, manifest = probs_module.net, probs_module.manifest
    paths = _as_paths(images)
    if paths is not None:
        pred = P.predict_sources(net, manifest, paths, batch_size)
        if pred.failed:
            path, why = pred.failed[0]
            raise P.PredictError(f"{path}: {why} ({len(pred.failed)} unreadable image(s))")
        names, probs = pred.names, pred.probs
    else:
        try:
            array = _as_image_array(images)
            probs = P.class_probabilities(net, manifest, array, batch_size)
        except ValueError as err:
            raise P.PredictError(f"images: {err}") from None
        names = None
    frame = P.probability_frame(probs, list(manifest.classes))
    order = np.argsort(-probs, axis=1, kind="stable")
    for k in range(1, min(top_k, len(manifest.classes))):
        frame.insert(2 * k, f"class_{k + 1}", [manifest.classes[j] for j in order[:, k]])
        frame.insert(2 * k + 1, f"probability_{k + 1}", probs[np.arange(len(probs)), order[:, k]])
    if names is not None:
        frame.insert(0, "file", names)
    return frame


# ----- helpers ---------------------------------------------------------------------------------------------
def _config_dirs(config_dir: str | Path | None) -> list[Path]:
    from clfops.config import user_config_dirs

    return user_config_dirs(None if config_dir is None else [config_dir])


def _as_paths(images: Any) -> list[str] | None:
    """A path or a list of paths -> list of str; anything else (arrays, PIL images) -> None."""
    if isinstance(images, (str, Path)):
        return [str(images)]
    if isinstance(images, (list, tuple)) and images and all(isinstance(i, (str, Path)) for i in images):
        return [str(i) for i in images]
    return None


def _as_image_array(images: Any) -> np.ndarray:
    """PIL image(s) or a numpy array -> the array shapes serving.predict accepts (a batch)."""
    import numpy as np

    if isinstance(images, (list, tuple)):
        arrays = [np.asarray(i) for i in images]
        if not arrays or len({a.shape for a in arrays}) != 1:
            raise ValueError("give a non-empty list of images of one size (or paths: they are resized)")
        return np.stack(arrays)
    array = np.asarray(images)
    if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (1, 3) and array.shape[0] not in (1, 3)):
        return array[None]  # one image: (H, W) or (H, W, C)
    return array


def _probabilities_module(net: torch.nn.Module, manifest: Manifest) -> Probabilities:
    return _probabilities_class()(net, manifest)


def __getattr__(name: str) -> Any:
    # `Probabilities` subclasses torch.nn.Module: built on first use so that importing this module stays cheap.
    if name == "Probabilities":
        return _probabilities_class()
    if name == "EvalResult":  # evaluate's own result type (clfops.evaluation.evaluate imports torch)
        from clfops.evaluation.evaluate import EvalResult

        return EvalResult
    raise AttributeError(f"module 'clfops.api' has no attribute {name!r}")


@functools.cache
def _probabilities_class() -> type:
    import torch

    from clfops.serving.inference import InferenceModel, probabilities

    class Probabilities(torch.nn.Module):
        """uint8 (N, C, H, W) -> softmax probabilities (N, K), with the model's own normalisation and test-time
        flip: what `clfops predict` computes. `.classes`: the class names in output order; `.manifest`."""

        def __init__(self, net: torch.nn.Module, manifest: Manifest) -> None:
            super().__init__()
            self.model = InferenceModel(net, manifest)  # serving's one inference path: uint8 -> logits
            self.net = self.model.net
            self.manifest = manifest
            self.classes = list(manifest.classes)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            if images.dtype != torch.uint8:
                raise ValueError(f"expected uint8 images (N, C, H, W), got {images.dtype}")
            return torch.from_numpy(probabilities(self.model(images)))  # float64, as `clfops predict`

    Probabilities.__module__ = __name__
    Probabilities.__qualname__ = "Probabilities"
    return Probabilities
