"""The safe model format: `model.safetensors` + `manifest.json`, no pickle anywhere.

The manifest says how to rebuild the network (registry name + args) and how to feed it (channels, size,
mean/std, class names); its `sha256` pins the exact weights file, so a swapped or corrupted file is caught
on load rather than producing wrong predictions.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from importlib.metadata import version as _dist_version
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clfops.errors import UserError
from clfops.safe_files import atomic_write_bytes, atomic_write_text

WEIGHTS = "model.safetensors"
MANIFEST = "manifest.json"


class ModelFileError(UserError):
    """A model directory that cannot be loaded safely or does not match what the caller expects."""


@dataclass
class Manifest:
    model: str
    model_args: dict[str, Any]
    classes: list[str]
    in_channels: int
    image_size: list[int]
    mean: list[float]
    std: list[float]
    sha256: str = ""
    clfops_version: str = _dist_version("clfops")
    data_sha256: str = ""
    run_id: str = ""
    test_flip: bool = False  # predictions average each image's logits with its mirror image's (augment.test_flip)
    # Logits are divided by this before the softmax (evaluation/calibration.py, fitted on the validation split
    # after training); 1.0: the raw softmax (model.calibrate=false, and manifests written before it existed).
    temperature: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)


def save_model(directory: Path, net: nn.Module, manifest: Manifest) -> Path:
    """Write weights then manifest (both atomically); returns the directory."""
    from safetensors.torch import save

    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    blob = save(state)
    manifest.sha256 = hashlib.sha256(blob).hexdigest()
    atomic_write_bytes(directory / WEIGHTS, blob)
    atomic_write_text(directory / MANIFEST, json.dumps(asdict(manifest), indent=2))
    return directory


def read_manifest(directory: Path) -> Manifest:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ModelFileError(f"{directory}: no {MANIFEST} (not a clfops model directory)")
    try:
        data = json.loads(path.read_text())
        manifest = Manifest(**data)
    except (json.JSONDecodeError, TypeError) as err:
        raise ModelFileError(f"{path}: unreadable manifest ({err})") from None
    for key in ("mean", "std"):  # one value per input channel, else preprocessing fails deep in torch
        values = getattr(manifest, key)
        if not isinstance(values, list) or len(values) != manifest.in_channels:
            raise ModelFileError(
                f"{path}: {key} must list {manifest.in_channels} numbers (one per channel), got {values!r}"
            )
    return manifest


def load_model(directory: Path, expected_classes: list[str] | None = None) -> tuple[nn.Module, Manifest]:
    """Rebuild the network from the registry and load verified weights (eval mode, CPU)."""
    from safetensors.torch import load

    directory = Path(directory)
    manifest = read_manifest(directory)
    blob_path = directory / WEIGHTS
    if not blob_path.is_file():
        raise ModelFileError(f"{directory}: no {WEIGHTS}")
    blob = blob_path.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if manifest.sha256 and digest != manifest.sha256:
        raise ModelFileError(
            f"{blob_path}: sha256 {digest[:12]}… does not match the manifest's {manifest.sha256[:12]}…"
        )
    if expected_classes is not None and list(expected_classes) != list(manifest.classes):
        raise ModelFileError(
            f"{directory}: model classes {manifest.classes} differ from the expected {list(expected_classes)}"
        )
    return build_net(manifest, load(blob), str(blob_path)), manifest


def build_net(manifest: Manifest, state: dict[str, torch.Tensor], where: str) -> nn.Module:
    """The manifest's architecture with `state` loaded (eval mode, CPU); weights that do not fit are one line."""
    from clfops.models import create_model

    size = (int(manifest.image_size[0]), int(manifest.image_size[1]))
    net = create_model(manifest.model, manifest.in_channels, len(manifest.classes), size, manifest.model_args)
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise ModelFileError(f"{where}: weights do not fit {manifest.model}: {str(err).splitlines()[0]}") from None
    return net.eval()
