# ruff: noqa: RUF009  spec() returns a dataclasses.field (MISSING + metadata), not a shared default
"""The type, range and choices of every config key: Hydra structured configs plus one generic range check.

Defaults live in configs/*.yaml only; these dataclasses declare types (every field defaults to MISSING, so a
YAML file that forgets a key fails `compose` with "KEY is required"). Each group option's YAML names its
schema first in its defaults list (`defaults: [adam_schema, _self_]`), train.yaml names `train_schema`:
OmegaConf then refuses a value of the wrong type, null where null is not allowed and unknown keys, on the
files and on command-line overrides alike, before anything runs.

This module holds train.yaml's own keys and the registration; groups.py the group options' schemas;
fields.py `spec` (a field's range and choices as metadata) and `validate`, the one pass that checks them.

Imports only OmegaConf and Hydra's ConfigStore (no torch): validation of hundreds of configs takes seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from clfops.config.fields import spec
from clfops.config.groups import (
    MODELS,
    MODES,
    MONITORS,
    AdamSchema,
    AugmentSchema,
    CosineSchedule,
    ExponentialSchedule,
    ImageData,
    MultistepSchedule,
    NoneSchedule,
    OnecycleSchedule,
    PlateauSchedule,
    SgdSchema,
    StepSchedule,
    StreamData,
    TrainerSchema,
)


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
    recipe: str = spec(choices=("auto", "fp32", "bf16"))
    seed: int = spec(min=0)
    deterministic: bool = spec()
    resume: str | None = spec()
    run: RunSchema = spec(factory=RunSchema)
    tracking: TrackingSchema = spec(factory=TrackingSchema)
    logging: LoggingSchema = spec(factory=LoggingSchema)
    checkpoint: CheckpointSchema = spec(factory=CheckpointSchema)


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
