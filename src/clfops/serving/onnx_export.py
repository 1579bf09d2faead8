"""ONNX export: one graph that takes uint8 images (N, C, H, W) and returns class probabilities.

The graph holds everything between pixels and answer: scale to 0..1, normalise with the manifest's mean/std, the
network, the test-time flip average when the manifest says test_flip, softmax. A consumer needs only
onnxruntime (any language), no clfops and no knowledge of the training recipe. The class names, image size,
channels, source run id and clfops version are in the model's metadata_props (`METADATA_*` keys, JSON values).

Exported with `torch.onnx.export(..., dynamo=True)` (the maintained exporter; the TorchScript one is deprecated)
with a dynamic batch dimension. `agreement` compares onnxruntime with torch on real images: `clfops export` runs
it on the whole test set and refuses to write a model that disagrees.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from dataclasses import dataclass
from importlib.metadata import version as _dist_version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from clfops.safe_files import atomic_write_bytes
from clfops.serving.inference import InferenceModel
from clfops.serving.saved_model import Manifest

OPSET = 18  # the dynamo exporter's default; onnxruntime >= 1.16 runs it
INPUT_NAME, OUTPUT_NAME = "images", "probabilities"
METADATA_CLASSES, METADATA_SIZE, METADATA_CHANNELS = "classes", "image_size", "channels"
METADATA_RUN_ID, METADATA_VERSION = "run_id", "clfops_version"
TOP1_AGREEMENT_MIN = 0.999  # share of images whose top-1 class must match torch's
MAX_PROB_DIFF = 1e-4  # largest allowed |p_onnx - p_torch| over every image and class


class ProbabilityModel(nn.Module):
    """serving's one inference path (`InferenceModel`: scale, normalise, channels_last, test-time flip) +
    softmax: what the ONNX graph computes."""

    def __init__(self, net: nn.Module, manifest: Manifest) -> None:
        super().__init__()
        self.model = InferenceModel(net, manifest)
        self.manifest = manifest
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(images).float(), dim=1)


@dataclass(frozen=True)
class Agreement:
    images: int
    top1_agree: float  # share of images with the same top-1 class in both
    max_prob_diff: float  # largest |p_onnx - p_torch|

    @property
    def ok(self) -> bool:
        return self.top1_agree >= TOP1_AGREEMENT_MIN and self.max_prob_diff <= MAX_PROB_DIFF

    def __str__(self) -> str:
        return (
            f"onnxruntime vs torch on {self.images} images: top-1 agrees on {self.top1_agree:.4%} "
            f"(need >= {TOP1_AGREEMENT_MIN:.1%}), max probability difference {self.max_prob_diff:.2e} "
            f"(need <= {MAX_PROB_DIFF:.0e})"
        )


def metadata(manifest: Manifest) -> dict[str, str]:
    size = [int(v) for v in manifest.image_size]
    return {
        METADATA_CLASSES: json.dumps(list(manifest.classes)),
        METADATA_SIZE: json.dumps(size),
        METADATA_CHANNELS: str(int(manifest.in_channels)),
        METADATA_RUN_ID: manifest.run_id,
        METADATA_VERSION: _dist_version("clfops"),
    }


def export_bytes(net: nn.Module, manifest: Manifest) -> bytes:
    """The serialized ONNX model (graph + weights inline + metadata_props). The graph comes from the cache of
    exported graphs when this architecture was exported before (serving/onnx_cache.py), holding `net`'s tensors."""
    import onnx

    from clfops.serving.onnx_cache import cached_export

    structure = {
        "opset": OPSET,
        "network": f"{type(net).__module__}.{type(net).__qualname__}",
        "model": manifest.model,
        "model_args": manifest.model_args,
        "in_channels": int(manifest.in_channels),
        "image_size": [int(v) for v in manifest.image_size],
        "test_flip": bool(manifest.test_flip),
    }
    module = ProbabilityModel(net, manifest)
    probe = np.random.default_rng(0).integers(0, 256, (8, manifest.in_channels, *structure["image_size"]), np.uint8)

    def agrees(proto: Any) -> bool:  # a cached graph with this model's tensors: the same answers as torch
        return agreement(proto.SerializeToString(), net, manifest, probe).max_prob_diff <= MAX_PROB_DIFF

    proto = cached_export(module, structure, _export, agrees)
    onnx.helper.set_model_props(proto, metadata(manifest))
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _export(module: nn.Module) -> Any:
    """torch.onnx's dynamo exporter, dynamic batch size, without onnxscript's optimizer passes: each of the
    module's tensors stays one initializer under its own name (what the cache relies on; onnxruntime applies
    its own graph optimizations when it loads the model)."""
    channels, height, width = module.manifest.in_channels, *module.manifest.image_size
    example = torch.zeros((2, channels, height, width), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1)
    # The exporter reports each pass through `logging` and prints a progress line per step: neither is
    # the user's business once export succeeded (failures still raise with the exporter's message).
    quiet = logging.getLogger("torch.onnx")
    level, quiet.level = quiet.level, logging.ERROR
    try:
        with warnings.catch_warnings():  # its FutureWarnings are about torch internals
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"images": {0: batch}},
                opset_version=OPSET,
                verbose=False,
                optimize=False,
            )
    finally:
        quiet.level = level
    assert program is not None
    return program.model_proto


def write_onnx(net: nn.Module, manifest: Manifest, out: Path) -> Path:
    atomic_write_bytes(out, export_bytes(net, manifest))
    return out


def session(model: bytes | Path, threads: int | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def onnx_probabilities(sess: Any, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """(N, classes) float32 probabilities from an onnxruntime session, `batch_size` images per run."""
    steps = range(0, len(images), batch_size)
    return np.concatenate([sess.run([OUTPUT_NAME], {INPUT_NAME: images[i : i + batch_size]})[0] for i in steps])


def agreement(model: bytes | Path, net: nn.Module, manifest: Manifest, images: np.ndarray) -> Agreement:
    """onnxruntime vs torch (fp32, the same ProbabilityModel) on uint8 (N, C, H, W) `images`."""
    x = np.ascontiguousarray(images, dtype=np.uint8)
    module = ProbabilityModel(net, manifest)
    with torch.inference_mode():
        expected = torch.cat([module(torch.from_numpy(x[i : i + 512])) for i in range(0, len(x), 512)]).numpy()
    got = onnx_probabilities(session(model), x)
    same = float((got.argmax(1) == expected.argmax(1)).mean()) if len(x) else 1.0
    diff = float(np.abs(got - expected).max()) if len(x) else 0.0
    return Agreement(len(x), same, diff)


def export_to_temp(net: nn.Module, manifest: Manifest) -> Path:
    """The ONNX file in a fresh temporary folder (for logging to MLflow); the caller removes the folder."""
    folder = Path(tempfile.mkdtemp(prefix="clfops-onnx-"))
    return write_onnx(net, manifest, folder / "model.onnx")
