"""`clfops predict`: class names and probabilities for image files, folders and IDX files.

The model comes from `serving.resolve.resolve_model` (run id, run dir, checkpoint or model URI, one meaning
for every verb). Images go through the same steps as in training: files are decoded by the image-folder reader
(Pillow mode handling, channels, bilinear resize), IDX arrays are adapted like IDX data sets; then the one
inference path (`serving.inference`). The array helpers here are shared with the MLflow pyfunc model
(pyfunc_model.py), so `clfops predict` and `mlflow models serve` compute the same thing.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from clfops.data import DataError
from clfops.errors import UserError
from clfops.safe_files import atomic_write_text
from clfops.serving.inference import predict_probabilities
from clfops.serving.saved_model import Manifest

TABLE_ROWS = 20  # rows printed; the rest go to --out only
_IDX_CODES = frozenset({0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E})


class PredictError(UserError):
    """Bad predict arguments (no model given, missing source): one line for the user."""


# ----- arrays -> probabilities (shared with the pyfunc model) ----------------------------------------------
def as_array(model_input: Any) -> np.ndarray:
    """numpy array, list of arrays, {name: array} or a DataFrame with one image per row -> one ndarray."""
    import pandas as pd

    if isinstance(model_input, dict) and len(model_input) == 1:
        model_input = next(iter(model_input.values()))
    if isinstance(model_input, pd.DataFrame):
        if model_input.shape[1] != 1:
            raise ValueError(f"expected a DataFrame with one column of images, got columns {list(model_input)}")
        model_input = model_input.iloc[:, 0].tolist()
    if isinstance(model_input, (list, tuple)):
        return np.stack([np.asarray(item) for item in model_input]) if model_input else np.zeros((0, 1, 1, 1))
    return np.asarray(model_input)


def _as_uint8(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind not in "fiub":
        raise ValueError(f"images must be numbers on the 0-255 scale, got dtype {x.dtype}")
    if x.size:
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"pixel values must be in 0..255, got {lo:g}..{hi:g}")
        if x.dtype.kind == "f" and 0 < hi <= 1.0:  # 0-1 floats would be read as an almost black image
            raise ValueError("pixel values look like 0..1 floats: multiply by 255 (the model takes 0..255)")
    return np.rint(x).astype(np.uint8)


def _to_nchw(x: np.ndarray, channels: int) -> np.ndarray:
    if x.ndim == 3:  # (N, H, W): grayscale
        return x[:, None]
    if x.ndim == 4:
        if x.shape[1] == channels or (x.shape[1] in (1, 3) and x.shape[3] not in (1, 3)):
            return x
        if x.shape[3] in (1, 3):  # (N, H, W, C), as images usually come from Pillow / numpy
            return x.transpose(0, 3, 1, 2)
    raise ValueError(f"expected images shaped (N,H,W), (N,H,W,C) or (N,C,H,W) with C 1 or 3, got {x.shape}")


def to_model_batch(images: np.ndarray, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """Any accepted image array -> uint8 (N, channels, H, W), converted as `data.sources.adapt` does."""
    array = np.ascontiguousarray(_to_nchw(_as_uint8(np.asarray(images)), channels))
    if not array.flags.writeable:  # read-only memory (np.frombuffer, an image's buffer): torch warns on it
        array = array.copy()
    x = torch.from_numpy(array)
    if x.shape[1] != channels:
        if channels == 3:
            x = x.expand(-1, 3, -1, -1)
        else:  # ITU-R 601 luma, as Pillow's convert("L") and the data readers
            w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            x = (x.float() * w).sum(1, keepdim=True).round().to(torch.uint8)
    if tuple(x.shape[2:]) != tuple(size) and len(x):
        x = F.interpolate(x.float(), size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
        x = x.round().clamp(0, 255).to(torch.uint8)
    return x.contiguous()


def class_probabilities(net: torch.nn.Module, manifest: Manifest, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Any accepted image array -> float64 probabilities (N, classes), through the one inference path."""
    x = to_model_batch(images, manifest.in_channels, (manifest.image_size[0], manifest.image_size[1]))
    return predict_probabilities(net, manifest, x, max(1, batch_size))


def probability_frame(probs: np.ndarray, classes: list[str]) -> Any:
    """DataFrame: class, probability, p_<class>… (what the pyfunc model and the server return)."""
    import pandas as pd

    top = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=int)
    columns: dict[str, Any] = {
        "class": [classes[i] for i in top],
        "probability": probs.max(axis=1) if len(probs) else np.zeros(0),
    }
    columns.update({f"p_{name}": probs[:, j] for j, name in enumerate(classes)})
    return pd.DataFrame(columns)


# ----- sources -> predictions ----------------------------------------------------------------------------
def _is_idx(path: Path) -> bool:
    if path.suffix == ".gz":
        return True
    with path.open("rb") as fh:
        head = fh.read(4)
    return len(head) == 4 and head[:2] == b"\0\0" and head[2] in _IDX_CODES


def expand_sources(sources: list[str]) -> list[tuple[str, Path]]:
    """("image" | "idx", path) in the order given; folders are searched recursively for image files."""
    from clfops.data.folder import IMAGE_SUFFIXES

    entries: list[tuple[str, Path]] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            found = (p for p in sorted(path.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            # As the folder reader: dot-files and dot-folders (its .clfops-cache too) are not images.
            entries += [("image", p) for p in found if not any(s.startswith(".") for s in p.relative_to(path).parts)]
        elif path.is_file():
            entries.append(("idx" if _is_idx(path) else "image", path))
        else:
            raise PredictError(f"{source}: no such file or folder")
    if not entries:  # an empty folder: exit 0 with no output would read as "nothing wrong"
        raise PredictError(f"no images in {', '.join(sources)} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return entries


@dataclass
class Predictions:
    names: list[str]
    probs: np.ndarray  # (N, classes)
    classes: list[str]
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, why)

    def top_k(self, k: int) -> np.ndarray:
        return np.argsort(-self.probs, axis=1, kind="stable")[:, : max(1, min(k, len(self.classes)))]


def _chunks(entries: list[tuple[str, Path]], manifest: Manifest, batch_size: int, failed: list) -> Iterator:
    """(names, uint8 images) batches; unreadable files are added to `failed` and skipped."""
    from clfops.data.folder import _decode  # the training decoder: same mode handling, channels, resize
    from clfops.data.idx import read_idx

    size = (manifest.image_size[0], manifest.image_size[1])
    names: list[str] = []
    arrays: list[np.ndarray] = []
    for kind, path in entries:
        if kind == "image":
            try:
                arrays.append(_decode(path, manifest.in_channels, size))
                names.append(str(path))
            except DataError as err:
                failed.append((str(path), str(err).removeprefix(f"{path}: ")))
            if len(arrays) >= batch_size:
                yield names, np.stack(arrays)
                names, arrays = [], []
            continue
        if arrays:  # keep the order of the sources: pending images before the IDX file's
            yield names, np.stack(arrays)
            names, arrays = [], []
        try:
            images = read_idx(path).numpy()
            images = to_model_batch(images, manifest.in_channels, size).numpy()
        except (DataError, ValueError) as err:
            failed.append((str(path), str(err).removeprefix(f"{path}: ")))
            continue
        for i in range(0, len(images), batch_size):
            yield [f"{path}[{j}]" for j in range(i, min(i + batch_size, len(images)))], images[i : i + batch_size]
    if arrays:
        yield names, np.stack(arrays)


def predict_sources(net: torch.nn.Module, manifest: Manifest, sources: list[str], batch_size: int = 256) -> Predictions:
    entries = expand_sources(sources)
    failed: list[tuple[str, str]] = []
    names: list[str] = []
    parts = [np.zeros((0, len(manifest.classes)))]
    for batch_names, images in _chunks(entries, manifest, batch_size, failed):
        parts.append(class_probabilities(net, manifest, images, batch_size))
        names += batch_names
    return Predictions(names, np.concatenate(parts), list(manifest.classes), failed)


# ----- output --------------------------------------------------------------------------------------------
def _top_text(pred: Predictions, row: int, top: np.ndarray) -> str:
    return " ".join(f"{pred.classes[j]}:{pred.probs[row, j]:.3f}" for j in top[row])


def check_out_path(path: Path) -> None:
    """Checked before predicting: a typo should not cost a whole run over the images."""
    if path.suffix.lower() not in (".csv", ".json"):
        raise PredictError(f"--out {path}: use a .csv or .json file name")


def write_output(pred: Predictions, path: Path, top_k: int) -> None:
    """CSV (file, class, probability, top_k, p_<class>…) or JSON, chosen by the suffix; written atomically."""
    check_out_path(path)
    top = pred.top_k(top_k)
    if path.suffix.lower() == ".json":
        rows = [
            {
                "file": name,
                "class": pred.classes[top[i, 0]],
                "probability": float(pred.probs[i, top[i, 0]]),
                "top_k": [{"class": pred.classes[j], "probability": float(pred.probs[i, j])} for j in top[i]],
            }
            for i, name in enumerate(pred.names)
        ]
        failed = [{"file": f, "error": why} for f, why in pred.failed]
        doc = {"classes": pred.classes, "predictions": rows, "failed": failed}
        atomic_write_text(path, json.dumps(doc, indent=1))
        return
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["file", "class", "probability", "top_k", *(f"p_{c}" for c in pred.classes)])
    for i, name in enumerate(pred.names):
        best = top[i, 0]
        probs = (f"{p:.6f}" for p in pred.probs[i])
        writer.writerow([name, pred.classes[best], f"{pred.probs[i, best]:.6f}", _top_text(pred, i, top), *probs])
    atomic_write_text(path, buf.getvalue())


def print_table(pred: Predictions, top_k: int, limit: int = TABLE_ROWS) -> None:
    from rich.console import Console
    from rich.table import Table

    top = pred.top_k(top_k)
    table = Table("file", "class", "probability", f"top {top.shape[1]}")
    for i, name in enumerate(pred.names[:limit]):
        best = top[i, 0]
        table.add_row(name, pred.classes[best], f"{pred.probs[i, best]:.3f}", _top_text(pred, i, top))
    console = Console()
    console.print(table)
    if len(pred.names) > limit:
        console.print(f"… and {len(pred.names) - limit} more ({len(pred.names)} images in all)")
