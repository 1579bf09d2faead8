"""`clfops train`: one run from a resolved config to a tested model, its files and its MLflow run.

The path: threads + seed -> run dir -> data (uint8 tensors) -> net + Classifier -> Lightning Trainer.fit
-> test with the best weights -> model files + summary.json -> MLflow status. `train(cfg)` returns the
summary dict; the CLI and the tests call it the same way.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from clfops import config as C
from clfops import runs
from clfops.callbacks import trainer_callbacks
from clfops.checkpoint import AtomicCheckpointIO, atomic_write_text
from clfops.data import Source
from clfops.data.augment import Augment, AugmentConfig
from clfops.data.loader import Splits, eval_loader, make_splits, train_loader
from clfops.data.sources import load_source
from clfops.export import Manifest, save_model
from clfops.hardware import configure_threads, resolve_precision
from clfops.models import count_params, create_model
from clfops.module import Classifier, ModuleSettings
from clfops.progress import progress_callbacks, quiet_lightning
from clfops.recorder import EpochStats, RunLogger
from clfops.schedules import OptimizerSettings, SchedulerSettings
from clfops.tracking import Tracker

log = logging.getLogger("clfops")


def train(cfg: DictConfig, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train, test and record one run; returns the summary (also written to RUN_DIR/summary.json)."""
    t_start = time.perf_counter()
    quiet_lightning()
    threads = configure_threads(cfg.trainer.num_threads)
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    L.seed_everything(cfg.seed, workers=False, verbose=False)
    torch.use_deterministic_algorithms(bool(cfg.deterministic), warn_only=True)
    run_dir = runs.create(Path(cfg.run.root).resolve(), cfg.run.name)
    handler = runs.attach_log_file(run_dir / "train.log")
    try:
        log.info(f"run dir {run_dir}  (threads {threads}, precision {precision})")
        atomic_write_text(run_dir / "config.yaml", C.to_yaml(cfg))
        atomic_write_text(run_dir / "overrides.yaml", "".join(f"- {o}\n" for o in overrides or []) or "[]\n")
        t0 = time.perf_counter()
        source = load_source(cfg.data.name, cfg.data.root, cfg.data.channels, _size(cfg.data.size))
        splits = make_splits(source, cfg.data.val_fraction, cfg.seed, cfg.data.train_limit)
        data_s = time.perf_counter() - t0
        tracker = _start_tracking(cfg, run_dir, source, overrides or [])
        try:
            summary = _fit_and_test(cfg, run_dir, source, splits, tracker, precision)
        except BaseException as err:
            _end_tracking(tracker, run_dir, err)
            raise
        summary.update(data_seconds=round(data_s, 3), total_seconds=round(time.perf_counter() - t_start, 3))
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
        if tracker is not None:
            _log_run_files(tracker, run_dir)
        _end_tracking(tracker, run_dir, None)
        runs.write_status(run_dir, "FINISHED")
        return summary
    finally:
        runs.detach_log_file(handler)


def _size(size: Any) -> tuple[int, int] | None:
    return None if size is None else (int(size[0]), int(size[1]))


def _normalisation(cfg: DictConfig, splits: Splits) -> tuple[list[float], list[float]]:
    """Configured mean/std, else measured on the training split (per channel, pixels in [0, 1])."""
    if cfg.data.mean is not None and cfg.data.std is not None and len(cfg.data.mean) == splits.train.x.shape[1]:
        return [float(v) for v in cfg.data.mean], [float(v) for v in cfg.data.std]
    x = splits.train.x[:20_000].float() / 255.0
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]


def build_module(cfg: DictConfig, source: Source, splits: Splits) -> Classifier:
    net = create_model(
        cfg.model.name, source.channels, len(source.classes), source.size, C.to_container(cfg.model.args)
    )
    mean, std = _normalisation(cfg, splits)
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
    )
    return Classifier(net, settings, Augment(augment_config(cfg.augment)))


def _fit_and_test(
    cfg: DictConfig, run_dir: Path, source: Source, splits: Splits, tracker: Tracker | None, precision: str
) -> dict[str, Any]:
    module = build_module(cfg, source, splits)
    n_params = count_params(module.net)
    runs.write_text(run_dir / "model_summary.txt", f"{module.net}\n\nparameters: {n_params:,}\n")
    if tracker is not None:
        tracker.log_params({"model.parameters": n_params, "precision.resolved": precision})
    logger = RunLogger(run_dir, tracker, bool(cfg.logging.tensorboard))
    callbacks, ckpt = trainer_callbacks(cfg, run_dir)
    progress, bar = progress_callbacks(cfg.logging.progress)
    trainer = L.Trainer(
        max_epochs=cfg.trainer.max_epochs,
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        strategy=cfg.trainer.strategy,
        num_nodes=cfg.trainer.num_nodes,
        precision=precision,
        logger=logger,
        callbacks=[*callbacks, EpochStats(), *progress],
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
    bs = cfg.data.batch_size
    train_dl = train_loader(splits.train, bs, cfg.seed, trainer.global_rank, trainer.world_size)
    val_dl = eval_loader(splits.val, cfg.data.eval_batch_size, trainer.global_rank, trainer.world_size)
    t0 = time.perf_counter()
    with _signals_as_interrupt():
        trainer.fit(module, train_dl, val_dl, ckpt_path=runs.resume_checkpoint(cfg.resume), weights_only=True)
    train_s = time.perf_counter() - t0
    if trainer.interrupted:
        raise KeyboardInterrupt
    best = ckpt.best_model_path or ckpt.last_model_path
    best_val = float(ckpt.best_model_score) if ckpt.best_model_score is not None else None
    if best:
        module.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
    test_dl = eval_loader(splits.test, cfg.data.eval_batch_size)
    test = trainer.test(module, test_dl, verbose=False)[0]
    model_dir = save_model(run_dir / "model", module.net, _manifest(cfg, source, module, tracker))
    return {
        "run_dir": str(run_dir),
        "run_id": tracker.run_id if tracker else None,
        "test_acc": test["test/acc"],
        "test_loss": test["test/loss"],
        "test_f1": test["test/f1"],
        "best_val_acc": best_val,
        "epochs": trainer.current_epoch,
        "train_seconds": round(train_s, 3),
        "images": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        "classes": list(source.classes),
        "data_sha256": source.sha256,
        "best_checkpoint": best,
        "model_dir": str(model_dir),
    }


def _manifest(cfg: DictConfig, source: Source, module: Classifier, tracker: Tracker | None) -> Manifest:
    return Manifest(
        model=cfg.model.name,
        model_args=C.to_container(cfg.model.args),
        classes=list(source.classes),
        in_channels=source.channels,
        image_size=list(source.size),
        mean=list(module.settings.mean),
        std=list(module.settings.std),
        data_sha256=source.sha256,
        run_id=tracker.run_id if tracker else "",
    )


class _Interrupted(KeyboardInterrupt):
    """SIGTERM turned into the same path as Ctrl-C: Lightning shuts down, the run ends KILLED."""


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise _Interrupted(f"signal {signum}")


class _signals_as_interrupt:
    def __enter__(self) -> None:
        self._old = signal.signal(signal.SIGTERM, _raise_interrupt)

    def __exit__(self, *exc: Any) -> None:
        signal.signal(signal.SIGTERM, self._old)


def _start_tracking(cfg: DictConfig, run_dir: Path, source: Source, overrides: list[str]) -> Tracker | None:
    if not cfg.tracking.enabled:
        return None
    tags = runs.provenance_tags(run_dir, overrides)
    experiment = cfg.tracking.experiment or source.name
    tracker = Tracker.start(cfg.tracking.uri, experiment, run_dir.name, tags, cfg.tracking.connect_timeout_s)
    runs.write_text(run_dir / "run.json", json.dumps({"run_id": tracker.run_id, "tracking_uri": tracker.uri}))
    params = C.flatten(cfg)
    params.update(runs.version_params())
    params.update({"data.sha256": source.sha256, "data.classes": len(source.classes)})
    tracker.log_params(params)
    log.info(f"MLflow run {tracker.run_id} in experiment {experiment!r} at {tracker.uri}")
    return tracker


def _log_run_files(tracker: Tracker, run_dir: Path) -> None:
    for name in (
        "config.yaml",
        "overrides.yaml",
        "metrics.csv",
        "summary.json",
        "model_summary.txt",
        "train.log",
    ):
        tracker.log_artifact(run_dir / name)


def _end_tracking(tracker: Tracker | None, run_dir: Path, err: BaseException | None) -> None:
    if err is None:
        status, message = "FINISHED", None
    elif isinstance(err, (KeyboardInterrupt, SystemExit)):
        status, message = "KILLED", f"interrupted ({err or 'Ctrl-C'})"
    else:
        status, message = (
            "FAILED",
            f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}",
        )
    runs.write_status(run_dir, status, message)
    if tracker is not None:
        tracker.log_artifact(run_dir / "train.log")
        tracker.end(status, message)
    if status != "FINISHED":
        print(f"run {status}: {run_dir}", file=sys.stderr)


def augment_config(aug: DictConfig) -> AugmentConfig:
    """configs/augment/*.yaml -> AugmentConfig (the yaml keys are its field names)."""
    return AugmentConfig(**C.to_container(aug))
