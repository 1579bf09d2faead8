"""From a resolved config to the objects one run trains with: the net inside its `Classifier`, the Lightning
`Trainer` with its callbacks and strategy. `clfops train`, `lr-find` and `batch-size-find` build the same way.

Multi-process runs (`trainer.devices>1`, `trainer.num_nodes>1` or `trainer.strategy=ddp`) get
`WatchedDDPStrategy`: Lightning's DDP (gloo on CPU, NCCL on GPU) whose rank 0 survives a dead rank long enough to
mark the run FAILED. `data.batch_size` is per process, as in Lightning: 2 processes step on 2 x 256 images.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from clfops import config as C
from clfops.data import Source
from clfops.data.augment import Augment, AugmentConfig
from clfops.data.loader import Splits
from clfops.models import create_model
from clfops.training.callbacks import AtomicCheckpointIO, ema_callback, trainer_callbacks
from clfops.training.distributed import WatchedDDPStrategy, job_shape
from clfops.training.finetune import InitModel, apply_freeze, apply_init, parse_freeze
from clfops.training.module import Classifier, ModuleSettings
from clfops.training.progress import progress_callbacks
from clfops.training.recorder import EpochStats, RunLogger
from clfops.training.schedules import OptimizerSettings, SchedulerSettings


def normalisation(cfg: DictConfig, splits: Splits) -> tuple[list[float], list[float]]:
    """Configured mean/std, else measured on the training split (per channel, pixels in [0, 1])."""
    if cfg.data.mean is not None and cfg.data.std is not None and len(cfg.data.mean) == splits.train.x.shape[1]:
        return [float(v) for v in cfg.data.mean], [float(v) for v in cfg.data.std]
    x = splits.train.x[:20_000].float() / 255.0
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]


def build_module(
    cfg: DictConfig, source: Source, splits: Splits, steps_per_epoch: int, init: InitModel | None = None
) -> Classifier:
    """The Classifier; with `init` (model.init, a new run) the net starts from the parent's weights, and
    model.freeze applies in every case (it is not part of a checkpoint)."""
    net = create_model(
        cfg.model.name, source.channels, len(source.classes), source.size, C.to_container(cfg.model.args)
    )
    if init is not None:
        apply_init(net, init, list(source.classes))
    frozen = apply_freeze(net, parse_freeze(cfg.model.freeze))
    if frozen:
        logging.getLogger("clfops").info(f"model.freeze={cfg.model.freeze}: {frozen:,} parameters frozen")
    mean, std = normalisation(cfg, splits)
    augment = augment_config(cfg.augment)
    opt = C.to_container(cfg.optimizer)
    sched = C.to_container(cfg.scheduler)
    settings = ModuleSettings(
        num_classes=len(source.classes),
        mean=mean,
        std=std,
        optimizer=OptimizerSettings(**opt),
        scheduler=SchedulerSettings(**sched),
        label_smoothing=float(cfg.trainer.label_smoothing),
        channels_last=bool(cfg.trainer.channels_last),
        seed=int(cfg.seed),
        classes=list(source.classes),
        steps_per_epoch=steps_per_epoch,
    )
    return Classifier(net, settings, Augment(augment))


def make_trainer(
    cfg: DictConfig,
    run_dir: Path,
    precision: str,
    logger: RunLogger,
    extra: list[L.Callback],
    strategy: str | WatchedDDPStrategy | None = None,
) -> tuple[L.Trainer, ModelCheckpoint]:
    callbacks, ckpt = trainer_callbacks(cfg, run_dir)
    progress, bar = progress_callbacks(cfg.logging.progress)
    devices, num_nodes = job_shape(cfg.trainer.devices, int(cfg.trainer.num_nodes))
    trainer = L.Trainer(
        max_epochs=cfg.trainer.max_epochs,
        accelerator=cfg.trainer.accelerator,
        devices=devices,
        strategy=strategy if strategy is not None else str(cfg.trainer.strategy),
        num_nodes=num_nodes,
        precision=precision,
        logger=logger,
        callbacks=[*callbacks, *extra, EpochStats(), *progress],
        enable_progress_bar=bar,
        enable_model_summary=False,
        gradient_clip_val=cfg.trainer.gradient_clip_val,
        limit_val_batches=cfg.trainer.limit_val_batches,
        check_val_every_n_epoch=cfg.trainer.check_val_every_n_epoch,
        log_every_n_steps=cfg.tracking.log_every_n_steps,
        num_sanity_val_steps=0,
        deterministic=bool(cfg.deterministic),
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(run_dir),
    )
    return trainer, ckpt


def check_settings(cfg: DictConfig) -> None:
    """Settings that contradict each other are refused before a run dir or an MLflow run exists (one line)."""
    augment_config(cfg.augment)  # ranges, and test_flip without flip training
    ema_callback(cfg.trainer.ema, bool(cfg.trainer.swa.enabled))  # EMA and SWA together
    if cfg.logging.tensorboard:
        require_tensorboard()
    if cfg.data.name == "folder":  # a wrong folder layout is refused before a run dir exists
        from clfops.data.folder import check_layout

        check_layout(Path(cfg.data.root))


def require_tensorboard() -> None:
    """logging.tensorboard=true needs the optional `tensorboard` package (the `tensorboard` extra)."""
    import importlib.util

    from clfops.errors import UserError

    if importlib.util.find_spec("tensorboard") is None:
        hint = "pip install 'clfops[tensorboard]' (or logging.tensorboard=false)"
        raise UserError(f"logging.tensorboard=true needs TensorBoard: {hint}")


def augment_config(aug: DictConfig) -> AugmentConfig:
    """clfops/configs/augment/*.yaml -> AugmentConfig (the yaml keys are its field names)."""
    return AugmentConfig(**C.to_container(aug))


def make_strategy(cfg: DictConfig, on_stuck: Callable[[str], None] | None) -> str | WatchedDDPStrategy:
    """`trainer.strategy` as given, except DDP (asked for, or what `auto` picks for several processes), which
    becomes `WatchedDDPStrategy`; `on_stuck(message)` fails the run when a dead rank leaves rank 0 blocked."""
    name = str(cfg.trainer.strategy)
    devices, num_nodes = job_shape(cfg.trainer.devices, int(cfg.trainer.num_nodes))
    several = num_nodes > 1 or (isinstance(devices, int) and devices > 1)
    if name == "ddp" or (name == "auto" and several):
        return WatchedDDPStrategy(on_stuck)
    return name
