"""The one model resolver: a reference to a trained model -> its network, manifest and where it came from.

Four kinds of reference, one meaning for every verb that takes a model (`clfops evaluate`, `clfops predict`,
and later the API and fine-tuning from a model):

- run dir: RUN_DIR/model (model.safetensors + manifest.json, the best weights the run saved);
- checkpoint: RUN_DIR/checkpoints/x.ckpt's weights + the manifest of its run (RUN_DIR/model/manifest.json):
  architecture, classes and normalisation are the run's, never re-derived from config or data;
- run id: the model the MLflow run logged (`runs:/ID/model`), else its local run dir (tag clfops.run_dir);
- model URI: `runs:/ID/PATH`, `models:/NAME@ALIAS`, `models:/NAME/VERSION`, `models:/m-ID` (a logged model).

The same bytes give the same network and manifest whichever way they are named. The run's training config
(config.yaml: which data it was trained on) comes along when it can be found.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from omegaconf import DictConfig
from torch import nn

from clfops import config as C
from clfops.errors import UserError
from clfops.safe_files import load_checkpoint
from clfops.serving.saved_model import MANIFEST, WEIGHTS, Manifest, ModelFileError, build_net, load_model, read_manifest

RefKind = Literal["run_dir", "checkpoint", "run_id", "model_uri"]
OPTIONS: dict[RefKind, str] = {
    "run_dir": "--run-dir",
    "checkpoint": "--checkpoint",
    "run_id": "--run-id",
    "model_uri": "--model-uri",
}


_RUN_ID = re.compile(r"[0-9a-f]{32}")  # MLflow run ids: uuid4 hex


class ModelRefError(UserError):
    """A model reference that names nothing usable (none or several given, missing files): one line."""


@dataclass(frozen=True)
class ModelRef:
    kind: RefKind
    value: str

    @classmethod
    def guess(cls, text: str) -> ModelRef:
        """One string (the API, `model.init`): an existing folder is a run dir (RUN_DIR/model itself counts as
        its run dir), a *.ckpt path a checkpoint, runs:/ or models:/ a model URI, 32 hex digits an MLflow run
        id; anything else is refused in one line."""
        if text.startswith(("runs:/", "models:/")):
            return cls("model_uri", text)
        path = Path(text).expanduser()
        if path.is_dir():
            if path.name == "model" and (path / MANIFEST).is_file():
                return cls("run_dir", str(path.parent))
            return cls("run_dir", str(path))
        if path.suffix == ".ckpt":
            return cls("checkpoint", str(path))  # a missing .ckpt is reported as such, not looked up as a run id
        if _RUN_ID.fullmatch(text):
            return cls("run_id", text)
        raise ModelRefError(
            f"model {text!r}: no such folder or .ckpt file, and not an MLflow run id (32 hex digits) or a "
            "runs:/ or models:/ URI"
        )

    @classmethod
    def from_options(
        cls, run_dir: str | None, checkpoint: str | None, run_id: str | None, model_uri: str | None
    ) -> ModelRef:
        """The CLI's four options, exactly one of which must be given."""
        given = {"run_dir": run_dir, "checkpoint": checkpoint, "run_id": run_id, "model_uri": model_uri}
        named = [(kind, str(v)) for kind, v in given.items() if v]
        if len(named) != 1:
            raise ModelRefError(f"give exactly one of {', '.join(OPTIONS.values())}")
        kind, value = named[0]
        return cls(kind, value)  # type: ignore[arg-type]


@dataclass
class ResolvedModel:
    net: nn.Module  # eval mode, CPU
    manifest: Manifest
    description: str  # "run dir …", "checkpoint …", "MLflow run …", "models:/…": for reports
    run_id: str | None = None
    tracking_uri: str | None = None  # the store that holds the run, when known
    run_dir: Path | None = None
    config: DictConfig | None = None  # the run's training config (config.yaml), when found


def resolve_model(ref: ModelRef | str, tracking_uri: str | None = None) -> ResolvedModel:
    """A model reference (a `ModelRef`, or one string whose kind is guessed) -> network + manifest + origin.

    `tracking_uri` is the store for run ids and model URIs (default $MLFLOW_TRACKING_URI, else clfops' own)."""
    if isinstance(ref, str):
        ref = ModelRef.guess(ref)
    if ref.kind == "run_dir":
        return from_run_dir(Path(ref.value))
    if ref.kind == "checkpoint":
        return from_checkpoint(Path(ref.value))
    if ref.kind == "run_id":
        return from_run_id(ref.value, tracking_uri)
    return from_model_uri(ref.value, tracking_uri)


def _config(path: Path) -> DictConfig | None:
    return C.from_yaml(path) if path.is_file() else None


def _run_json(run_dir: Path) -> tuple[str | None, str | None]:
    """(run id, tracking URI) the run dir's run.json records."""
    path = run_dir / "run.json"
    if not path.is_file():
        return None, None
    data = json.loads(path.read_text())
    return data.get("run_id"), data.get("tracking_uri")


def from_run_dir(run_dir: Path) -> ResolvedModel:
    """RUN_DIR/model: the best weights the run saved when it finished."""
    if not run_dir.is_dir():
        raise ModelRefError(f"--run-dir {run_dir}: no such directory")
    if not (run_dir / "model" / MANIFEST).is_file():
        hint = "resume it with `clfops train resume=RUN_DIR`" if (run_dir / "checkpoints").is_dir() else "is it one?"
        raise ModelRefError(f"--run-dir {run_dir}: no model/{MANIFEST} (the run did not finish: {hint})")
    net, manifest = load_model(run_dir / "model")
    run_id, uri = _run_json(run_dir)
    desc = f"run dir {run_dir.resolve()}"
    return ResolvedModel(net, manifest, desc, run_id, uri, run_dir, _config(run_dir / "config.yaml"))


def from_checkpoint(path: Path) -> ResolvedModel:
    """A Lightning checkpoint's weights with the manifest of its run (RUN_DIR/checkpoints/x.ckpt -> RUN_DIR)."""
    ckpt = load_checkpoint(path)  # missing / pickled / truncated files -> one-line CheckpointError
    run_dir = path.resolve().parent.parent
    if not (run_dir / "model" / MANIFEST).is_file():
        raise ModelRefError(
            f"{path}: no {run_dir / 'model' / MANIFEST} beside it (classes and normalisation come from the "
            "finished run's manifest): use a checkpoint inside its run dir, RUN_DIR/checkpoints/*.ckpt"
        )
    manifest = read_manifest(run_dir / "model")
    classes = (ckpt.get("clfops") or {}).get("classes")  # what the run trained on (callbacks.RunInfo)
    if classes and list(classes) != list(manifest.classes):
        raise ModelFileError(f"{path}: checkpoint classes {classes} differ from its run's {manifest.classes}")
    # The LightningModule holds the network as `self.net`: its weights are the `net.*` entries.
    state = {k.removeprefix("net."): v for k, v in ckpt.get("state_dict", {}).items() if k.startswith("net.")}
    net = build_net(manifest, state, str(path))
    manifest = replace(manifest, sha256="")  # the manifest's sha256 pins model.safetensors, not these weights
    run_id, uri = _run_json(run_dir)
    desc = f"checkpoint {path.resolve()}"
    return ResolvedModel(net, manifest, desc, run_id, uri, run_dir, _config(run_dir / "config.yaml"))


def _find_model_dir(folder: Path) -> Path | None:
    """The folder holding manifest.json + model.safetensors anywhere under `folder` (pyfunc keeps it in
    artifacts/; a plain artifact copy has it at the top)."""
    for found in sorted(folder.rglob(MANIFEST), key=lambda p: len(p.parts)):
        if (found.parent / WEIGHTS).is_file():
            return found.parent
    return None


def _run_config(uri: str, run_id: str, tags: dict[str, str], tmp: Path) -> DictConfig | None:
    """The run's config.yaml artifact, else the one in its local run dir (tag clfops.run_dir)."""
    from clfops.tracking import download_run_artifact

    local = download_run_artifact(uri, run_id, "config.yaml", tmp / "config")
    if local is not None:
        return _config(local)
    run_dir = tags.get("clfops.run_dir")
    return _config(Path(run_dir) / "config.yaml") if run_dir else None


def from_run_id(run_id: str, tracking_uri: str | None) -> ResolvedModel:
    """The model the run logged (`runs:/ID/model`), else the local run dir its clfops.run_dir tag names."""
    from clfops.tracking import TrackingError, download_model, find_run

    ref = find_run(tracking_uri, run_id)  # an unknown id is a one-line TrackingError here
    run_dir = Path(ref.tags["clfops.run_dir"]) if ref.tags.get("clfops.run_dir") else None
    with tempfile.TemporaryDirectory(prefix="clfops-model-") as tmp:
        try:
            local, _ = download_model(ref.uri, f"runs:/{run_id}/model", Path(tmp) / "model")
        except TrackingError:  # no logged model (tracking.log_model=false, an older run): use the run dir
            local = None
        model_dir = _find_model_dir(local) if local is not None and local.is_dir() else None
        if model_dir is not None:
            net, manifest = load_model(model_dir)  # reads everything into memory: the temp copy can go
            cfg = _run_config(ref.uri, run_id, ref.tags, Path(tmp))
            return ResolvedModel(net, manifest, f"MLflow run {run_id}", run_id, ref.uri, run_dir, cfg)
    if run_dir is not None and (run_dir / "model" / MANIFEST).is_file():
        found = from_run_dir(run_dir)
        found.description, found.run_id, found.tracking_uri = f"MLflow run {run_id}", run_id, ref.uri
        return found
    raise ModelRefError(f"MLflow run {run_id} logged no model and its run dir {run_dir or '?'} is not here")


def from_model_uri(model_uri: str, tracking_uri: str | None) -> ResolvedModel:
    """runs:/ID/PATH, models:/NAME@ALIAS, models:/NAME/N, models:/m-ID: downloaded, then the clfops model inside."""
    from clfops.tracking import download_model, find_run

    with tempfile.TemporaryDirectory(prefix="clfops-model-") as tmp:
        local, run_id = download_model(tracking_uri, model_uri, Path(tmp) / "model")
        model_dir = _find_model_dir(local if local.is_dir() else local.parent)
        if model_dir is None:
            raise ModelRefError(f"{model_uri}: no {MANIFEST} + {WEIGHTS} inside (not a model logged by clfops)")
        net, manifest = load_model(model_dir)
        cfg, run_dir, store = None, None, None
        if run_id:
            ref = find_run(tracking_uri, run_id)
            cfg, store = _run_config(ref.uri, run_id, ref.tags, Path(tmp)), ref.uri
            run_dir = Path(ref.tags["clfops.run_dir"]) if ref.tags.get("clfops.run_dir") else None
    return ResolvedModel(net, manifest, model_uri, run_id, store, run_dir, cfg)
