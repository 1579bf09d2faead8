"""The data to evaluate a model on: the test/val split of what it was trained on, another data set, or a folder.

The model itself comes from `serving.resolve.resolve_model` (the one resolver, shared with `clfops predict`);
its training config is what tells us the data the model was trained on (the manifest names classes, not data
sets). Labels are re-indexed into the model's class order.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from omegaconf import DictConfig

from clfops.data import Source, Split
from clfops.data.folder import load_folder
from clfops.data.loader import make_splits
from clfops.data.sources import DATASETS, load_source
from clfops.evaluation import EvaluateError
from clfops.serving.resolve import ResolvedModel


@dataclass
class EvalData:
    split: Split  # uint8 images, labels in the model's class order
    label: str  # "fashion_mnist test", "folder /path", …
    sha256: str  # content hash of the data set the split comes from
    is_training_test: bool  # the test split of the data the model was trained on (the run's own eval/*)


@lru_cache(maxsize=1)
def _source(name: str, root: str | None, channels: int | None, size: tuple[int, int] | None) -> Source:
    """One data set in memory at a time: evaluations in one process read its files once."""
    return load_source(name, root, channels, size)


def _config_source(cfg: DictConfig) -> Source:
    size = None if cfg.data.size is None else (int(cfg.data.size[0]), int(cfg.data.size[1]))
    return _source(cfg.data.name, cfg.data.root, cfg.data.channels, size)


def _folder_safe(name: str) -> str:
    """A class name as a folder can spell it: "T-shirt/top" is the folder "T-shirt_top"."""
    return name.replace("/", "_")


def _map_labels(split: Split, data_classes: list[str], model_classes: list[str], where: str) -> Split:
    """Labels re-indexed into the model's class order; different class names are an error."""
    if data_classes == model_classes:
        return split
    model_keys = [_folder_safe(c) for c in model_classes]
    data_keys = [_folder_safe(c) for c in data_classes]
    if sorted(data_keys) != sorted(model_keys):
        missing = sorted(set(model_keys) - set(data_keys))
        extra = sorted(set(data_keys) - set(model_keys))
        raise EvaluateError(
            f"{where}: classes differ from the model's (data lacks {missing or 'none'}, "
            f"has extra {extra or 'none'}): evaluate on data with the model's {len(model_classes)} classes"
        )
    lookup = torch.tensor([model_keys.index(key) for key in data_keys])
    return Split(split.x, lookup[split.y])


def load_eval_data(spec: str, model: ResolvedModel) -> EvalData:
    """`test` / `val` of the data the model was trained on, another named data set's test split, or a folder."""
    m = model.manifest
    size = (int(m.image_size[0]), int(m.image_size[1]))
    if spec in ("test", "val"):
        cfg = model.config
        if cfg is None:
            raise EvaluateError(
                f"cannot tell which data {model.description} was trained on (no config.yaml found): "
                "pass --data /path/to/images"
            )
        source = _config_source(cfg)
        splits = make_splits(source, cfg.data.val_fraction, cfg.seed, cfg.data.train_limit, cfg.data.get("test_limit"))
        split = splits.val if spec == "val" else splits.test
        data = EvalData(split, f"{source.name} {spec}", source.sha256, spec == "test")
    elif spec in DATASETS and spec != "folder":
        source = _source(spec, None, m.in_channels, size)
        data = EvalData(source.test, f"{spec} test", source.sha256, False)
    elif Path(spec).is_dir():
        # All images of a flat folder (test_fraction=0), or its test/ part when it has train/ + test/.
        source = load_folder(Path(spec), channels=None, size=size, test_fraction=0.0)
        split = source.test if len(source.test) else source.train
        data = EvalData(split, f"folder {spec}", source.sha256, False)
    else:
        raise EvaluateError(f"--data {spec}: use test, val, a data set name ({', '.join(DATASETS[:3])}) or a folder")
    channels = int(data.split.x.shape[1])
    if channels != m.in_channels:
        raise EvaluateError(f"--data {spec}: images have {channels} channel(s), the model expects {m.in_channels}")
    if tuple(data.split.x.shape[2:]) != size:
        raise EvaluateError(f"--data {spec}: images are {tuple(data.split.x.shape[2:])}, the model expects {size}")
    data_classes = list(source.classes)
    data.split = _map_labels(data.split, data_classes, list(m.classes), f"--data {spec}")
    return data
