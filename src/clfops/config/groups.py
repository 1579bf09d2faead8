# ruff: noqa: RUF009  spec() returns a dataclasses.field (MISSING + metadata), not a shared default
"""The schema of each config group's options: model, optimizer, scheduler, augment, data, trainer.

Each option's YAML (configs/<group>/<option>.yaml) names its schema first in its defaults list
(`defaults: [adam_schema, _self_]`); schema.py registers them under those names. Types as annotations, ranges
and choices as `spec(...)` metadata (fields.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from clfops.config.fields import spec

# Metric names an epoch logs (training/module.py): what checkpoint/early stopping/plateau may monitor.
MONITORS = ("val/acc", "val/loss", "val/f1", "val/precision", "val/recall", "train/acc", "train/loss")
MODES = ("min", "max")


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
