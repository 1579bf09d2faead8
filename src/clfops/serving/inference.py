"""The one inference path: uint8 images -> the network's input -> logits -> probabilities.

Every consumer goes through here: training's validation (`Classifier.validation_step`) and test report
(`evaluation.evaluate_net`), `clfops evaluate`, `clfops predict`, the MLflow pyfunc model, and exports
(`InferenceModel` is a plain `nn.Module` from uint8 images to logits). What feeding a model means comes from its
`Manifest` alone:

1. scale and normalise: (x / 255 - mean) / std, folded into one multiply-add on a fresh float32 copy
   (x * scale + shift). Each extra full-batch temporary of a 128-image batch costs about as much as the
   arithmetic on it, hence the in-place form; training's augmentation path calls the same `Normalise`.
2. memory format: channels_last (the net is converted to match), as training runs by default.
3. test-time flip (`manifest.test_flip`): the mean of the logits of each image and of its mirror image.
4. precision: bf16 autocast where asked ("bf16-mixed", as Lightning's validation), else fp32; on the device given
   (the CPU by default: what serving uses; training's test report runs on the device it trained on).
5. calibration: the float32 logits divided by `manifest.temperature` (fitted on the validation split after
   training, evaluation/calibration.py; 1.0 for old models). `InferenceModel` does it, so every consumer and
   every export gets calibrated logits; the argmax, hence accuracy, is unchanged.
6. probabilities: softmax in float64 of those logits (what every report and table shows).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from clfops.errors import UserError
from clfops.models import tta_logits
from clfops.serving.saved_model import Manifest

PRECISIONS = ("32-true", "bf16-mixed")  # of inference; "auto" is resolved by the caller (evaluate, training)

__all__ = [
    "PRECISIONS",
    "InferenceError",
    "InferenceModel",
    "InputStep",
    "Normalise",
    "check_precision",
    "predict_logits",
    "predict_probabilities",
    "probabilities",
]


class InferenceError(UserError):
    """Bad inference arguments (batch size, precision): one line for the user."""


class Normalise(nn.Module):
    """In place: float pixels on the 0-255 scale (or 0-1 with `unit=True`) -> (x/255 - mean) / std.

    The constants are non-persistent buffers: they follow `.to(device)` and never enter a state_dict (a
    checkpoint's keys stay those of the network)."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        m = torch.tensor([float(v) for v in mean]).view(1, -1, 1, 1)
        s = torch.tensor([float(v) for v in std]).view(1, -1, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * s), persistent=False)
        self.register_buffer("scale01", 1.0 / s, persistent=False)
        self.register_buffer("shift", -m / s, persistent=False)

    def forward(self, x: torch.Tensor, unit: bool = False) -> torch.Tensor:
        """`x` must be a float buffer the caller owns: it is overwritten and returned."""
        return x.mul_(self.scale01 if unit else self.scale).add_(self.shift)


class InputStep(nn.Module):
    """uint8 (N, C, H, W) -> logits of a network: normalise, memory format, test-time flip.

    Holds no network (a module holding it keeps its own state_dict keys); `forward(net, images)`."""

    def __init__(
        self,
        mean: list[float],
        std: list[float],
        test_flip: bool,
        memory_format: torch.memory_format = torch.channels_last,
    ) -> None:
        super().__init__()
        self.normalise = Normalise(mean, std)
        self.test_flip = bool(test_flip)
        self.memory_format = memory_format

    @classmethod
    def of(cls, manifest: Manifest) -> InputStep:
        return cls(list(manifest.mean), list(manifest.std), manifest.test_flip)

    def model_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 batch -> the normalised float batch the network takes (a fresh tensor, the input is kept)."""
        x = self.normalise(images.to(torch.float32, copy=True))
        return x.contiguous(memory_format=self.memory_format)

    def forward(self, net: nn.Module, images: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return tta_logits(net, self.model_input(images), self.test_flip)


class InferenceModel(nn.Module):
    """`net` as it is served: uint8 (N, C, H, W) in, calibrated float32 logits (raw logits / the manifest's
    temperature) out: what an export such as ONNX traces, so its softmax is the calibrated one too."""

    def __init__(self, net: nn.Module, manifest: Manifest) -> None:
        super().__init__()
        self.step = InputStep.of(manifest)
        self.net = net.eval().to(memory_format=self.step.memory_format)
        self.manifest = manifest
        # A buffer, not a Python float: it follows .to(device), and an export keeps it as a named tensor (its
        # value is not baked into the graph: serving/onnx_cache.py). Non-persistent: not in the state_dict.
        self.register_buffer("temperature", torch.tensor(float(manifest.temperature)), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # float() first: under bf16 autocast the net's logits are bf16, and x / 1.0 is exact (old models unchanged)
        return self.step(self.net, images).float() / self.temperature


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise InferenceError(f"--precision {precision}: choose {' or '.join(PRECISIONS)}")


def _check_images(images: torch.Tensor, manifest: Manifest) -> None:
    want = (int(manifest.in_channels), int(manifest.image_size[0]), int(manifest.image_size[1]))
    if len(images) == 0:  # nothing to feed: any shape will do
        return
    if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != want:
        got = f"{images.dtype} {tuple(images.shape)}"
        raise InferenceError(f"images are {got}, the model takes uint8 (N, {want[0]}, {want[1]}, {want[2]})")


def predict_logits(
    net: nn.Module,
    manifest: Manifest,
    images: torch.Tensor,
    batch_size: int = 256,
    precision: str = "32-true",
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 calibrated logits (N, K) on the CPU, in batches of `batch_size`, under
    inference_mode, computed on `device`.

    `precision="bf16-mixed"` runs the net under bf16 autocast, as Lightning does in validation: 3-4x faster on a
    CPU with native bf16 (10k Fashion-MNIST test images with test-time flip: ~0.5 s vs ~1.8 s for fp32).
    Converts `net` to eval mode and channels_last in place, and moves it to `device`. On a GPU each batch is
    copied there as it comes (`images` may be any size) and the logits come back once, at the end."""
    if batch_size < 1:
        raise InferenceError(f"--batch-size {batch_size}: must be >= 1")
    check_precision(precision)
    _check_images(images, manifest)
    device = torch.device(device)
    model = InferenceModel(net, manifest).to(device)
    out = torch.empty(len(images), len(manifest.classes), device=device)
    bf16 = precision == "bf16-mixed"
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for i in range(0, len(images), batch_size):
            out[i : i + batch_size] = model(images[i : i + batch_size].to(device, non_blocking=True))
    return out.cpu()


def probabilities(logits: torch.Tensor) -> np.ndarray:
    """Softmax over classes in float64: (N, K) logits (calibrated ones, from `InferenceModel`/`predict_logits`)
    -> (N, K) probabilities summing to 1."""
    return torch.softmax(logits.detach().cpu().double(), dim=1).numpy()


def predict_probabilities(
    net: nn.Module, manifest: Manifest, images: torch.Tensor, batch_size: int = 256, precision: str = "32-true"
) -> np.ndarray:
    """uint8 (N, C, H, W) -> float64 probabilities (N, K): `predict_logits` then `probabilities`."""
    return probabilities(predict_logits(net, manifest, images, batch_size, precision))
