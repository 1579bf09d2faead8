"""What to evaluate: a model from a run dir, a checkpoint, an MLflow run or a model URI, and the data for it.

Every way in ends as the same `ModelSource` (network in eval mode + manifest + the training config when one
can be found), so the evaluation itself never cares where the model came from. The training config is what
tells us the data the model was trained on (the manifest names classes, not data sets).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from clfops import config as C
from clfops.data import Source, Split
from clfops.data.folder import load_folder
from clfops.data.loader import make_splits
from clfops.data.sources import DATASETS, load_source
from clfops.evaluation import EvaluateError
from clfops.safe_files import CheckpointError, load_checkpoint
from clfops.serving.saved_model import MANIFEST, WEIGHTS, Manifest, load_model


@dataclass
class ModelSource:
    net: nn.Module
    manifest: Manifest
    config: DictConfig | None  # the training config (config.yaml of the run), when found
    description: str  # "run dir …", "checkpoint …", "MLflow run …", "models:/…"
    run_id: str | None = None
    tracking_uri: str | None = None
    run_dir: Path | None = None


@dataclass
class EvalData:
    split: Split  # uint8 images, labels in the model's class order
    label: str  # "fashion_mnist test", "folder /path", …
    sha256: str  # content hash of the data set the split comes from
    is_training_test: bool  # the test split of the data the model was trained on (the run's own eval/*)


def _config(path: Path) -> DictConfig | None:
    return C.from_yaml(path) if path.is_file() else None


def _run_json(run_dir: Path) -> tuple[str | None, str | None]:
    path = run_dir / "run.json"
    if not path.is_file():
        return None, None
    data = json.loads(path.read_text())
    return data.get("run_id"), data.get("tracking_uri")


def from_run_dir(run_dir: Path) -> ModelSource:
    """RUN_DIR/model (the saved best weights), or its best/last checkpoint when the model was not saved."""
    if not run_dir.is_dir():
        raise EvaluateError(f"--run-dir {run_dir}: no such directory")
    model_dir = run_dir / "model"
    if not (model_dir / MANIFEST).is_file():
        for name in ("best.ckpt", "last.ckpt"):
            if (run_dir / "checkpoints" / name).is_file():
                return from_checkpoint(run_dir / "checkpoints" / name)
        raise EvaluateError(f"--run-dir {run_dir}: no model/ and no checkpoints/ (did the run finish?)")
    net, manifest = load_model(model_dir)
    run_id, uri = _run_json(run_dir)
    desc = f"run dir {run_dir.resolve()}"
    return ModelSource(net, manifest, _config(run_dir / "config.yaml"), desc, run_id, uri, run_dir)


@lru_cache(maxsize=1)
def _source(name: str, root: str | None, channels: int | None, size: tuple[int, int] | None) -> Source:
    """One data set in memory at a time: a checkpoint and its test data read the files once."""
    return load_source(name, root, channels, size)


def _config_source(cfg: DictConfig) -> Source:
    size = None if cfg.data.size is None else (int(cfg.data.size[0]), int(cfg.data.size[1]))
    return _source(cfg.data.name, cfg.data.root, cfg.data.channels, size)


def from_checkpoint(path: Path) -> ModelSource:
    """A Lightning checkpoint of a run: the network is rebuilt from the run's config.yaml (two levels up:
    RUN_DIR/checkpoints/x.ckpt) and fed as in training (mean/std from config or measured on its train split)."""
    from clfops.models import create_model
    from clfops.training.build import normalisation  # the one definition of the run's normalisation

    ckpt = load_checkpoint(path)  # missing / pickled / truncated files -> one-line CheckpointError
    run_dir = path.resolve().parent.parent
    cfg = _config(run_dir / "config.yaml")
    if cfg is None:
        raise EvaluateError(f"{path}: no config.yaml in {run_dir} (a checkpoint needs its run dir to be rebuilt)")
    source = _config_source(cfg)
    if ckpt.get("classes") and list(ckpt["classes"]) != list(source.classes):
        raise EvaluateError(f"{path}: checkpoint classes {ckpt['classes']} differ from the data's {source.classes}")
    args = C.to_container(cfg.model.args)
    net = create_model(cfg.model.name, source.channels, len(source.classes), source.size, args)
    # The LightningModule holds the network as `self.net`: its weights are the `net.*` entries.
    state = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit {cfg.model.name}: {str(err).splitlines()[0]}") from None
    mean, std = normalisation(cfg, make_splits(source, cfg.data.val_fraction, cfg.seed, cfg.data.train_limit))
    run_id, uri = _run_json(run_dir)
    manifest = Manifest(
        model=cfg.model.name,
        model_args=args,
        classes=list(source.classes),
        in_channels=source.channels,
        image_size=list(source.size),
        mean=mean,
        std=std,
        data_sha256=source.sha256,
        run_id=run_id or "",
        test_flip=bool(cfg.augment.get("test_flip", False)),
    )
    return ModelSource(net.eval(), manifest, cfg, f"checkpoint {path.resolve()}", run_id, uri, run_dir)


def _find_model_dir(folder: Path) -> Path | None:
    """The folder holding manifest.json + model.safetensors anywhere under `folder` (pyfunc keeps it in
    artifacts/; a plain artifact copy has it at the top)."""
    for manifest in sorted(folder.rglob(MANIFEST), key=lambda p: len(p.parts)):
        if (manifest.parent / WEIGHTS).is_file():
            return manifest.parent
    return None


def _run_config(uri: str, run_id: str, tags: dict[str, str], tmp: Path) -> DictConfig | None:
    """The run's config.yaml artifact, else the one in its local run dir (tag clfops.run_dir)."""
    from clfops.tracking import download_run_artifact

    local = download_run_artifact(uri, run_id, "config.yaml", tmp / "config")
    if local is not None:
        return _config(local)
    run_dir = tags.get("clfops.run_dir")
    return _config(Path(run_dir) / "config.yaml") if run_dir else None


def from_run_id(run_id: str, uri: str | None) -> ModelSource:
    """The model the run logged (`runs:/ID/model`), else the local run dir its clfops.run_dir tag names."""
    from clfops.tracking import TrackingError, download_model, find_run

    ref = find_run(uri, run_id)  # an unknown id is a one-line TrackingError here
    run_dir = Path(ref.tags["clfops.run_dir"]) if ref.tags.get("clfops.run_dir") else None
    with tempfile.TemporaryDirectory(prefix="clfops-eval-") as tmp:
        try:
            local, _ = download_model(ref.uri, f"runs:/{run_id}/model", Path(tmp) / "model")
        except TrackingError:  # no logged model (tracking.log_model=false, an older run): use the run dir
            local = None
        model_dir = _find_model_dir(local) if local is not None and local.is_dir() else None
        if model_dir is not None:
            net, manifest = load_model(model_dir)
            cfg = _run_config(ref.uri, run_id, ref.tags, Path(tmp))
            return ModelSource(net, manifest, cfg, f"MLflow run {run_id}", run_id, ref.uri, run_dir)
    if run_dir is not None and run_dir.is_dir():
        source = from_run_dir(run_dir)
        source.description, source.run_id, source.tracking_uri = f"MLflow run {run_id}", run_id, ref.uri
        return source
    raise EvaluateError(f"MLflow run {run_id} has no logged model and its run dir {run_dir or '?'} is not here")


def from_model_uri(model_uri: str, uri: str | None) -> ModelSource:
    """runs:/ID/model, models:/name@alias, models:/name/N: downloaded, then the clfops model folder inside."""
    from clfops.tracking import download_model, find_run

    with tempfile.TemporaryDirectory(prefix="clfops-eval-") as tmp:
        local, run_id = download_model(uri, model_uri, Path(tmp) / "model")
        model_dir = _find_model_dir(local if local.is_dir() else local.parent)
        if model_dir is None:
            raise EvaluateError(f"{model_uri}: no {MANIFEST} + {WEIGHTS} inside (not a model logged by clfops)")
        net, manifest = load_model(model_dir)
        cfg, run_dir, store = None, None, None
        if run_id:
            ref = find_run(uri, run_id)
            cfg, store = _run_config(ref.uri, run_id, ref.tags, Path(tmp)), ref.uri
            run_dir = Path(ref.tags["clfops.run_dir"]) if ref.tags.get("clfops.run_dir") else None
    return ModelSource(net, manifest, cfg, model_uri, run_id, store, run_dir)


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


def load_eval_data(spec: str, model: ModelSource) -> EvalData:
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
