# ruff: noqa: RUF009  spec() returns a dataclasses.field (MISSING + metadata), not a shared default
"""The type, range and choices of every config key: Hydra structured configs plus one generic range check.

Defaults live in configs/*.yaml only; these dataclasses declare types (every field defaults to MISSING, so a
YAML file that forgets a key fails `compose` with "KEY is required"). Each group option's YAML names its
schema first in its defaults list (`defaults: [adam_schema, _self_]`), train.yaml names `train_schema`:
OmegaConf then refuses a value of the wrong type, null where null is not allowed and unknown keys, on the
files and on command-line overrides alike, before anything runs.

What OmegaConf's types cannot say (lr > 0, 0 <= val_fraction < 1, a set of strings, an int-or-float key) is
declared as metadata on the field (`spec(min=0, exclusive=True)`) and checked by `validate(cfg)`, one walk
over the composed config that reads the schema of each node (`OmegaConf.get_type`). A key added later only
needs its field here; tests/test_config_schema.py derives its cases from the same metadata.

Imports only OmegaConf and Hydra's ConfigStore (no torch): validation of hundreds of configs takes seconds.
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from clfops.errors import UserError

# Metric names an epoch logs (training/module.py): what checkpoint/early stopping/plateau may monitor.
MONITORS = ("val/acc", "val/loss", "val/f1", "val/precision", "val/recall", "train/acc", "train/loss")
MODES = ("min", "max")


class SchemaError(UserError):
    """A value of the right type outside its declared range or choices (one line naming the key)."""


def spec(
    *,
    min: float | None = None,
    max: float | None = None,
    exclusive: bool = False,  # min and max themselves are invalid
    choices: tuple[Any, ...] | None = None,
    types: tuple[type, ...] | None = None,  # for `Any` fields: the Python types allowed (OmegaConf has no Union)
    length: int | None = None,  # lists: exact length
    nullable: bool = False,  # for `Any` fields: null allowed too (Optional[...] fields say so by their type)
    factory: Any = None,  # nested schema: its class
) -> Any:
    """A schema field: MISSING (the YAML holds the default) plus the range metadata `validate` reads."""
    meta = {"min": min, "max": max, "exclusive": exclusive, "choices": choices, "types": types, "length": length}
    meta["nullable"] = nullable
    meta = {k: v for k, v in meta.items() if v is not None and v is not False}  # min=0 is kept
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=MISSING, metadata=meta)


# ----- train.yaml's own keys ---------------------------------------------------------------------------
@dataclass
class RunSchema:
    root: str = spec()
    name: str | None = spec()


@dataclass
class TrackingSchema:
    enabled: bool = spec()
    uri: str | None = spec()
    experiment: str | None = spec()
    register_as: str | None = spec()
    log_model: bool = spec()
    log_torch_flavor: bool = spec()
    log_onnx: bool = spec()
    log_every_n_steps: int = spec(min=1)
    connect_timeout_s: float = spec(min=0, exclusive=True)


@dataclass
class LoggingSchema:
    tensorboard: bool = spec()
    progress: str = spec(choices=("auto", "rich", "tqdm", "plain", "none"))


@dataclass
class CheckpointSchema:
    monitor: str = spec(choices=MONITORS)
    mode: str = spec(choices=MODES)
    every_n_epochs: int | None = spec(min=0)  # 0 or null: no periodic checkpoints
    keep_periodic: int = spec(min=1)  # the newest N periodic checkpoints stay on disk


@dataclass
class TrainSchema:
    """configs/train.yaml; the group nodes get their schema from their own option's defaults list."""

    model: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    augment: Any = MISSING
    data: Any = MISSING
    trainer: Any = MISSING
    seed: int = spec(min=0)
    deterministic: bool = spec()
    resume: str | None = spec()
    run: RunSchema = spec(factory=RunSchema)
    tracking: TrackingSchema = spec(factory=TrackingSchema)
    logging: LoggingSchema = spec(factory=LoggingSchema)
    checkpoint: CheckpointSchema = spec(factory=CheckpointSchema)


# ----- model ------------------------------------------------------------------------------------------
@dataclass
class WidthArgs:
    width: int = spec(min=1)


@dataclass
class DropoutArgs:
    dropout: float = spec(min=0, max=1)


@dataclass
class FastArgs:
    width: int = spec(min=1)
    hidden: int = spec(min=1)
    dropout: float = spec(min=0, max=1)


@dataclass
class MlpArgs:
    hidden: int = spec(min=1)
    dropout: float = spec(min=0, max=1)


@dataclass
class NoArgs:
    pass


def _model(names: tuple[str, ...], args: type) -> type:
    """A model option's schema: its name and its constructor's keyword arguments."""
    return dataclasses.make_dataclass(
        f"{args.__name__}Model",
        [
            ("name", str, spec(choices=names)),
            ("args", args, spec(factory=args)),
            ("init", str | None, spec()),  # a model reference to fine-tune from (training/finetune.py)
            ("calibrate", bool, spec()),  # fit a temperature on val after training
            ("freeze", Any, spec(types=(int, str), min=0, choices=("none", "backbone"))),
        ],
    )


MODELS = {
    "air_cnn_schema": _model(("air_cnn",), WidthArgs),
    "cnn_schema": _model(("cnn",), DropoutArgs),
    "fast_cnn_schema": _model(("fast_cnn", "quick_cnn"), FastArgs),
    "mlp_schema": _model(("mlp",), MlpArgs),
    "resnet_schema": _model(("resnet18",), NoArgs),
}


# ----- optimizer --------------------------------------------------------------------------------------
@dataclass
class AdamSchema:
    name: str = spec(choices=("adam", "adamw"))
    lr: float = spec(min=0)  # 0 freezes the weights (tests use it); negative is refused
    weight_decay: float = spec(min=0)
    betas: list[float] = spec(length=2, min=0, max=1)
    backbone_lr_scale: float = spec(min=0, max=1)  # 0: the backbone does not move (as lr=0)


@dataclass
class SgdSchema:
    name: str = spec(choices=("sgd",))
    lr: float = spec(min=0)  # 0 freezes the weights (tests use it); negative is refused
    weight_decay: float = spec(min=0)
    momentum: float = spec(min=0, max=1)
    nesterov: bool = spec()
    backbone_lr_scale: float = spec(min=0, max=1)  # 0: the backbone does not move (as lr=0)


# ----- scheduler --------------------------------------------------------------------------------------
@dataclass
class NoneSchedule:
    name: str = spec(choices=("none",))
    warmup_epochs: int = spec(min=0)


@dataclass
class CosineSchedule:
    name: str = spec(choices=("cosine",))
    min_lr: float = spec(min=0)
    warmup_epochs: int = spec(min=0)


@dataclass
class ExponentialSchedule:
    name: str = spec(choices=("exponential",))
    gamma: float = spec(min=0, max=1, exclusive=True)
    warmup_epochs: int = spec(min=0)


@dataclass
class StepSchedule:
    name: str = spec(choices=("step",))
    step_size: int = spec(min=1)
    gamma: float = spec(min=0, max=1, exclusive=True)
    warmup_epochs: int = spec(min=0)


@dataclass
class MultistepSchedule:
    name: str = spec(choices=("multistep",))
    milestones: list[int] = spec(min=1)
    gamma: float = spec(min=0, max=1, exclusive=True)
    warmup_epochs: int = spec(min=0)


@dataclass
class OnecycleSchedule:
    name: str = spec(choices=("onecycle",))
    pct_start: float = spec(min=0, max=1, exclusive=True)
    div_factor: float = spec(min=0, exclusive=True)
    final_div_factor: float = spec(min=0, exclusive=True)


@dataclass
class PlateauSchedule:
    name: str = spec(choices=("plateau",))
    monitor: str = spec(choices=MONITORS)
    mode: str = spec(choices=MODES)
    factor: float = spec(min=0, max=1, exclusive=True)
    patience: int = spec(min=0)


# ----- augment ----------------------------------------------------------------------------------------
@dataclass
class AugmentSchema:
    flip_p: float = spec(min=0, max=1)
    crop_pad: int = spec(min=0)
    rotation_deg: float = spec(min=0, max=180)
    brightness: float = spec(min=0, max=1)
    contrast: float = spec(min=0, max=1)
    saturation: float = spec(min=0, max=1)
    erasing_p: float = spec(min=0, max=1)
    test_flip: bool = spec()


# ----- data -------------------------------------------------------------------------------------------
@dataclass
class ImageData:
    """fashion_mnist, mnist, cifar10, folder: decoded into memory."""

    name: str = spec(choices=("fashion_mnist", "mnist", "cifar10", "folder"))
    root: str | None = spec()
    batch_size: int = spec(min=1)
    eval_batch_size: int = spec(min=1)
    val_fraction: float = spec(min=0, max=1, exclusive=True)
    train_limit: int | None = spec(min=2)
    test_limit: int | None = spec(min=1)
    channels: int | None = spec(choices=(1, 3))
    size: list[int] | None = spec(length=2, min=1)
    mean: list[float] | None = spec(min=0, max=1)
    std: list[float] | None = spec(min=0, max=1, exclusive=True)


@dataclass
class S3Schema:
    endpoint_url: str | None = spec()
    region: str | None = spec()


@dataclass
class StreamData(ImageData):
    """`clfops data pack` shards (data/stream.py)."""

    name: str = spec(choices=("stream",))
    root: str = spec()
    s3: S3Schema = spec(factory=S3Schema)
    cache_dir: str = spec()
    max_cache_size: str = spec()
    chunk_bytes: str = spec()
    shuffle_window: int = spec(min=0)


# ----- trainer ----------------------------------------------------------------------------------------
@dataclass
class EarlyStoppingSchema:
    enabled: bool = spec()
    monitor: str = spec(choices=MONITORS)
    mode: str = spec(choices=MODES)
    patience: int = spec(min=0)  # 0: stop at the first epoch without improvement


@dataclass
class SwaSchema:
    enabled: bool = spec()
    lr: float = spec(min=0, exclusive=True)
    epoch_start: float = spec(min=0, max=1)


@dataclass
class EmaSchema:
    enabled: bool = spec()
    decay: float = spec(min=0, max=1, exclusive=True)
    start_step: int = spec(min=0)


@dataclass
class TrainerSchema:
    max_epochs: int = spec(min=1)
    precision: str = spec(
        choices=("auto", "32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "64")
    )
    accelerator: str = spec(choices=("auto", "cpu", "gpu", "cuda", "mps"))
    devices: Any = spec(types=(int, str), min=1, choices=("auto",))  # a count or "auto"
    strategy: str = spec(choices=("auto", "ddp", "ddp_spawn", "single_device"))
    num_nodes: int = spec(min=1)
    channels_last: bool = spec()
    gradient_clip_val: float | None = spec(min=0, exclusive=True)
    label_smoothing: float = spec(min=0, max=1)
    # null: all; a float is a fraction, an int a batch count
    limit_val_batches: Any = spec(types=(int, float), min=0, nullable=True)
    check_val_every_n_epoch: int = spec(min=1)
    num_threads: int | None = spec(min=1)
    early_stopping: EarlyStoppingSchema = spec(factory=EarlyStoppingSchema)
    swa: SwaSchema = spec(factory=SwaSchema)
    ema: EmaSchema = spec(factory=EmaSchema)


# ----- registration -----------------------------------------------------------------------------------
SCHEMAS: dict[str, dict[str, type]] = {
    "": {"train_schema": TrainSchema},
    "model": MODELS,
    "optimizer": {"adam_schema": AdamSchema, "sgd_schema": SgdSchema},
    "scheduler": {
        "none_schema": NoneSchedule,
        "cosine_schema": CosineSchedule,
        "exponential_schema": ExponentialSchedule,
        "step_schema": StepSchedule,
        "multistep_schema": MultistepSchedule,
        "onecycle_schema": OnecycleSchedule,
        "plateau_schema": PlateauSchedule,
    },
    "augment": {"augment_schema": AugmentSchema},
    "data": {"image_schema": ImageData, "stream_schema": StreamData},
    "trainer": {"trainer_schema": TrainerSchema},
}


def register() -> None:
    """Put every schema into Hydra's ConfigStore (idempotent: the store is a process-wide singleton)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, schemas in SCHEMAS.items():
        for name, node in schemas.items():
            store.store(group=group or None, name=name, node=node)


def is_schema_name(group: str, name: str) -> bool:
    return name in SCHEMAS.get(group, {})


# ----- the range pass ---------------------------------------------------------------------------------
def validate(cfg: DictConfig, prefix: str = "") -> None:
    """Check every field's declared range/choices/types on the composed config; SchemaError on the first."""
    kind = OmegaConf.get_type(cfg)
    declared = {f.name: f for f in dataclasses.fields(kind)} if dataclasses.is_dataclass(kind) else {}
    for key in cfg:
        value = cfg[key] if not OmegaConf.is_missing(cfg, key) else None
        name = f"{prefix}{key}"
        if isinstance(value, DictConfig) and not (key in declared and "types" in declared[key].metadata):
            validate(value, f"{name}.")
        elif key in declared and declared[key].metadata:
            check_value(name, value, field_meta(kind, str(key)))


def field_meta(kind: Any, key: str) -> dict[str, Any]:
    """A schema field's metadata, plus `integer` when its annotation is int (for the message's wording)."""
    import typing

    meta = dict(next(f.metadata for f in dataclasses.fields(kind) if f.name == key))
    ref = typing.get_type_hints(kind).get(key)
    while typing.get_args(ref) and ref is not None:  # Optional[list[int]] -> list[int] -> int
        ref = next(a for a in typing.get_args(ref) if a is not type(None))
    if ref is int:
        meta["integer"] = True
    return meta


def check_value(name: str, value: Any, meta: dict[str, Any]) -> None:
    """One key against its metadata: raises SchemaError naming the key, the value and what is valid."""
    if value is None:
        if "types" in meta and not meta.get("nullable"):  # an `Any` field: OmegaConf let null through
            raise SchemaError(f"{name}: expected {describe(meta)}, got null")
        return  # typed fields: nullability is OmegaConf's check (Optional[...] in the schema)
    if isinstance(value, (ListConfig, DictConfig)) and "types" in meta:  # an `Any` field takes scalars only
        raise SchemaError(f"{name}: expected {describe(meta)}, got {show(value)}")
    if isinstance(value, ListConfig):
        items = list(value)
        if "length" in meta and len(items) != meta["length"]:
            raise SchemaError(f"{name}: expected {describe(meta)}, got {show(value)}")
        for item in items:
            _check_scalar(name, item, meta, whole=value)
        return
    _check_scalar(name, value, meta, whole=value)


def _check_scalar(name: str, value: Any, meta: dict[str, Any], whole: Any) -> None:
    types = meta.get("types")
    choices = meta.get("choices")
    if types is not None and not (isinstance(value, types) and not isinstance(value, bool)):
        raise SchemaError(f"{name}: expected {describe(meta)}, got {show(whole)}")
    if isinstance(value, str):
        if choices is not None and value not in choices:
            raise SchemaError(f"{name}: expected {describe(meta)}, got {show(whole)}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if choices is not None and types is None and value not in choices:
        raise SchemaError(f"{name}: expected {describe(meta)}, got {show(whole)}")
    low, high, open_ = meta.get("min"), meta.get("max"), meta.get("exclusive", False)
    below = low is not None and (value <= low if open_ else value < low)
    above = high is not None and (value >= high if open_ else value > high)
    if below or above:
        raise SchemaError(f"{name}: expected {describe(meta)}, got {show(whole)}")


def describe(meta: dict[str, Any]) -> str:
    """'a number in (0, 1)', 'one of: a, b', 'an integer >= 1 or auto': what is valid, in words."""
    types = meta.get("types", ())
    noun = "an integer" if meta.get("integer") or (types and float not in types) else "a number"
    parts = []
    low, high, open_ = meta.get("min"), meta.get("max"), meta.get("exclusive", False)
    if low is not None and high is not None:
        parts.append(f"{noun} in {'(' if open_ else '['}{low:g}, {high:g}{')' if open_ else ']'}")
    elif low is not None:
        parts.append(f"{noun} {'>' if open_ else '>='} {low:g}")
    elif high is not None:
        parts.append(f"{noun} {'<' if open_ else '<='} {high:g}")
    choices = meta.get("choices")
    if choices is not None:
        listed = ", ".join(str(c) for c in choices)
        parts.append(f"one of: {listed}" if not parts else listed)
    if meta.get("nullable"):
        parts.append("null")
    words = " or ".join(parts) if parts else "a valid value"
    return f"a list of {meta['length']} values, each {words}" if "length" in meta else words


def show(value: Any) -> str:
    """A value as the user typed it: null, 'text', [1, 2]."""
    if value is None:
        return "null"
    if isinstance(value, ListConfig):
        return str(OmegaConf.to_container(value))
    return repr(value) if isinstance(value, str) else str(value)


def expected_type(parent: Any, key: Any, ref: Any) -> str:
    """The declared type of `parent.key` in words: Optional[float] -> 'a number or null'."""
    import typing

    if dataclasses.is_dataclass(parent):
        hints = typing.get_type_hints(parent)
        ref = hints.get(str(key), ref)
        meta = next((dict(f.metadata) for f in dataclasses.fields(parent) if f.name == key), {})
        if "types" in meta:
            return describe(meta)
    elif typing.get_origin(typing.get_args(ref)[0] if typing.get_args(ref) else ref) in (list, tuple):
        ref = typing.get_args(typing.get_args(ref)[0])[0]  # an item of an Optional[list[X]]
    optional = False
    args = typing.get_args(ref)
    if typing.get_origin(ref) in (typing.Union, types.UnionType) and type(None) in args:
        optional, ref = True, next(a for a in args if a is not type(None))
    origin = typing.get_origin(ref)
    if origin in (list, tuple):
        inner = typing.get_args(ref)
        words = f"a list of {_PLURAL.get(inner[0], 'values')}" if inner else "a list"
    elif origin is dict or ref is dict:
        words = "a mapping"
    else:
        words = _TYPE_WORDS.get(ref, getattr(ref, "__name__", str(ref)))
    return f"{words} or null" if optional else words


_PLURAL = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}
_TYPE_WORDS = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
