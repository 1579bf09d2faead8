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
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from clfops import config as C
from clfops import runs
from clfops.callbacks import AtomicCheckpointIO, GracefulStop, RunInfo, RunInterrupted, trainer_callbacks
from clfops.checkpoint import (
    CheckpointError,
    ResumePoint,
    atomic_write_bytes,
    atomic_write_text,
    check_compatible,
    find_resume,
)
from clfops.data import Source
from clfops.data.augment import Augment, AugmentConfig
from clfops.data.loader import Splits, eval_loader, make_splits, train_loader
from clfops.data.sources import load_source
from clfops.export import Manifest, save_model
from clfops.hardware import configure_threads, resolve_precision
from clfops.models import count_params, create_model
from clfops.module import Classifier, ModuleSettings
from clfops.progress import progress_callbacks, quiet_libraries
from clfops.recorder import EpochStats, RunLogger
from clfops.schedules import OptimizerSettings, SchedulerSettings, build_optimizer
from clfops.timings import StageClock, process_age_seconds
from clfops.tracking import STATUSES, Tracker, run_dir_lookup

log = logging.getLogger("clfops")


def train(
    cfg: DictConfig, overrides: list[str] | None = None, extra_callbacks: list[L.Callback] | None = None
) -> dict[str, Any]:
    """Train, test and record one run; returns the summary (also written to RUN_DIR/summary.json).

    `extra_callbacks` join the run's Lightning callbacks (studies: parent-run tagging, Optuna pruning).

    With `resume=` set, the run continues in its own run dir and MLflow run, from its checkpoint's config
    plus `overrides`; a change that breaks the run (other model or data) is refused before anything runs.
    """
    t_start = time.perf_counter()
    startup_s = process_age_seconds()  # interpreter + imports + config, before this function
    quiet_libraries()
    overrides = list(overrides or [])
    resume = find_resume(cfg.resume, run_dir_lookup(cfg.tracking.uri)) if cfg.resume else None
    changed: list[str] = []
    if resume is not None:
        new = C.resume_config(resume.config, overrides)
        changed = check_compatible(resume.config, C.to_container(new))
        cfg = new
        cfg.resume = str(resume.checkpoint)
    threads = configure_threads(cfg.trainer.num_threads)
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    L.seed_everything(cfg.seed, workers=False, verbose=False)
    torch.use_deterministic_algorithms(bool(cfg.deterministic), warn_only=True)
    run_dir = resume.run_dir if resume else runs.create(Path(cfg.run.root).resolve(), cfg.run.name)
    run_lock = runs.lock(run_dir)
    handler = runs.attach_log_file(run_dir / "train.log")
    stop = GracefulStop(run_dir / "checkpoints" / "last.ckpt")
    stop.install()
    tracker: Tracker | None = None
    try:
        log.info(f"run dir {run_dir}  (threads {threads}, precision {precision})")
        if resume is not None:
            where = "mid-epoch" if resume.mid_epoch else "after epoch"
            log.info(f"resuming from {resume.checkpoint} ({where} {resume.epoch + 1}); changed: {changed or 'nothing'}")
        else:
            atomic_write_text(run_dir / "config.yaml", C.to_yaml(cfg))
            atomic_write_text(run_dir / "overrides.yaml", "".join(f"- {o}\n" for o in overrides) or "[]\n")
        runs.write_status(run_dir, "RUNNING")
        t0 = time.perf_counter()
        source = load_source(cfg.data.name, cfg.data.root, cfg.data.channels, _size(cfg.data.size))
        if resume is not None and source.sha256 != resume.data_sha256:
            raise CheckpointError(
                f"cannot resume: the data changed since the checkpoint (sha256 {source.sha256[:12]}…)"
            )
        splits = make_splits(source, cfg.data.val_fraction, cfg.seed, cfg.data.train_limit, cfg.data.test_limit)
        data_s = time.perf_counter() - t0
        clock = StageClock()
        tracker = _start_tracking(cfg, run_dir, source, overrides, resume, changed)
        clock.lap("tracking_start")
        summary = _fit_and_test(cfg, run_dir, source, splits, tracker, precision, stop, resume, extra_callbacks or [])
        summary.update(data_seconds=round(data_s, 3), total_seconds=round(time.perf_counter() - t_start, 3))
        clock.lap("fit_and_test")
        _write_pictures(cfg, run_dir, splits)
        clock.lap("pictures")
        if tracker is not None and cfg.tracking.log_model:  # the safe pyfunc model (~0.5 s), + a version if asked
            from clfops.promote import log_run_model

            example = splits.test.x[:2].numpy()  # two real images: the model's input example
            torch_flavor, register_as = bool(cfg.tracking.log_torch_flavor), cfg.tracking.register_as
            summary.update(log_run_model(tracker, Path(summary["model_dir"]), example, torch_flavor, register_as))
        summary["timings"] = _timings(summary, clock, startup_s)
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
        if tracker is not None:
            _log_run_files(tracker, run_dir)
    except BaseException as err:
        _end_tracking(tracker, run_dir, err)
        raise
    finally:
        stop.uninstall()
        runs.detach_log_file(handler)
        runs.unlock(run_lock)
    _end_tracking(tracker, run_dir, None)
    if tracker is not None and tracker.offline:  # the store lacks part of this run: say so where it is read
        summary["tracking_offline"] = True
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    return summary


def _timings(summary: dict[str, Any], clock: StageClock, startup_s: float | None) -> dict[str, float | None]:
    """Where the wall time went (seconds): what the speed issue asks to report, one number per stage."""
    fit, val = summary["train_seconds"], summary.get("validation_seconds", 0.0)
    return {
        "startup": startup_s,
        "data": summary["data_seconds"],
        "tracking_start": clock.seconds["tracking_start"],
        "train": round(fit - val, 3),
        "validation": val,
        "test": summary.get("test_seconds"),
        "pictures": clock.seconds["pictures"],
        "model_log": summary.get("model_log_seconds"),
        "total_in_process": round(summary["total_seconds"] + clock.seconds["pictures"], 3),
    }


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


def build_module(cfg: DictConfig, source: Source, splits: Splits, steps_per_epoch: int) -> Classifier:
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
        steps_per_epoch=steps_per_epoch,
    )
    return Classifier(net, settings, Augment(augment_config(cfg.augment)))


def _fit_and_test(
    cfg: DictConfig,
    run_dir: Path,
    source: Source,
    splits: Splits,
    tracker: Tracker | None,
    precision: str,
    stop: GracefulStop,
    resume: ResumePoint | None,
    extra: list[L.Callback],
) -> dict[str, Any]:
    keep = (resume.epoch, resume.global_step) if resume else None
    logger = RunLogger(run_dir, tracker, bool(cfg.logging.tensorboard), keep)
    info = RunInfo(C.to_container(cfg), source.classes, source.sha256)
    trainer, ckpt = _make_trainer(cfg, run_dir, precision, logger, [info, stop, *extra])
    train_dl = train_loader(splits.train, cfg.data.batch_size, cfg.seed, trainer.global_rank, trainer.world_size)
    val_dl = eval_loader(splits.val, cfg.data.eval_batch_size, trainer.global_rank, trainer.world_size)
    module = build_module(cfg, source, splits, steps_per_epoch=len(train_dl))
    n_params = count_params(module.net)
    runs.write_text(run_dir / "model_summary.txt", f"{module.net}\n\nparameters: {n_params:,}\n")
    if tracker is not None:
        optimizer = build_optimizer(module.net, module.settings.optimizer)  # only to record its class and defaults
        defaults = {f"optimizer.defaults.{k}": v for k, v in optimizer.defaults.items() if k != "params"}
        sizes = {f"data.images.{name}": len(getattr(splits, name)) for name in ("train", "val", "test")}
        tracker.log_params(
            {"model.parameters": n_params, "precision.resolved": precision, "optimizer.class": type(optimizer).__name__}
            | defaults
            | sizes
        )
    t0 = time.perf_counter()
    ckpt_path = str(resume.checkpoint) if resume else None
    try:
        trainer.fit(module, train_dl, val_dl, ckpt_path=ckpt_path, weights_only=True)
    except SystemExit as err:  # Lightning's SIGTERMException, or its exit after a KeyboardInterrupt
        raise RunInterrupted(stop.requested or signal.SIGINT) from err
    train_s = time.perf_counter() - t0
    if trainer.interrupted:
        raise RunInterrupted(stop.requested or signal.SIGINT)
    val_s = next((c.validation_seconds for c in trainer.callbacks if isinstance(c, EpochStats)), 0.0)
    t_test = time.perf_counter()
    best = ckpt.best_model_path or ckpt.last_model_path
    best_val = float(ckpt.best_model_score) if ckpt.best_model_score is not None else None
    if best:
        module.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
    manifest = _manifest(cfg, source, module, tracker)
    model_dir = save_model(run_dir / "model", module.net, manifest)
    test = _test(cfg, run_dir, source, splits, module, manifest, tracker)
    logger.log_metrics(test, step=trainer.global_step)  # metrics.csv + MLflow + TensorBoard, like the rest
    logger.save()
    test_s = time.perf_counter() - t_test  # best weights loaded, model files, test set + report
    return {
        "run_dir": str(run_dir),
        "run_id": tracker.run_id if tracker else None,
        "test_acc": test["test/acc"],
        "test_loss": test["test/loss"],
        "test_f1": test["test/f1"],
        "test_top3_acc": test["eval/top3_accuracy"],
        "test_ece": test["eval/ece"],
        "best_val_acc": best_val,
        "epochs": trainer.current_epoch,
        "train_seconds": round(train_s, 3),
        "validation_seconds": round(val_s, 3),
        "test_seconds": round(test_s, 3),
        "images": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        "classes": list(source.classes),
        "data_sha256": source.sha256,
        "best_checkpoint": best,
        "model_dir": str(model_dir),
    }


def _test(
    cfg: DictConfig,
    run_dir: Path,
    source: Source,
    splits: Splits,
    module: Classifier,
    manifest: Manifest,
    tracker: Tracker | None,
) -> dict[str, float]:
    """The best weights on the test set, through `clfops evaluate`'s own code: report files in RUN_DIR/eval,
    and `test/*` (the same names as val/*) plus `eval/*` (top-k, log-loss, ECE, per-class F1) metrics."""
    from clfops.evaluate import Provenance, evaluate_net

    provenance = Provenance(
        source=f"run dir {run_dir}",
        model=cfg.model.name,
        data=f"{source.name} test",
        data_sha256=source.sha256,
        run_id=tracker.run_id if tracker else None,
        tracking_uri=tracker.uri if tracker else None,
        manifest=manifest,
        config_yaml=C.to_yaml(cfg),
    )
    result = evaluate_net(module.net, manifest, splits.test, run_dir / "eval", provenance, cfg.data.eval_batch_size)
    report = result.report
    test = {"test/acc": report["accuracy"], "test/loss": report["log_loss"]}
    test |= {f"test/{m}": report["macro_avg"][m] for m in ("precision", "recall", "f1")}
    if tracker is not None:
        tracker.log_artifacts(run_dir / "eval", "eval")
    return test | result.metrics


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


def _make_trainer(
    cfg: DictConfig, run_dir: Path, precision: str, logger: RunLogger, extra: list[L.Callback]
) -> tuple[L.Trainer, ModelCheckpoint]:
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


def _start_tracking(
    cfg: DictConfig,
    run_dir: Path,
    source: Source,
    overrides: list[str],
    resume: ResumePoint | None,
    changed: list[str],
) -> Tracker | None:
    if not cfg.tracking.enabled:
        return None
    if resume is not None and (run_dir / "run.json").is_file():
        info = json.loads((run_dir / "run.json").read_text())
        tracker = Tracker.reopen(
            cfg.tracking.uri or info["tracking_uri"], info["run_id"], cfg.tracking.connect_timeout_s
        )
        tracker.run_dir = run_dir
        tags = {"clfops.resumed_from": str(resume.checkpoint), "clfops.resume_changed": ", ".join(changed) or "-"}
        tracker.set_tags(tags)
        log.info(f"MLflow run {tracker.run_id} reopened at {tracker.uri}")
        return tracker
    tags = runs.provenance_tags(run_dir, overrides)
    experiment = cfg.tracking.experiment or source.name
    tracker = Tracker.start(cfg.tracking.uri, experiment, run_dir.name, tags, cfg.tracking.connect_timeout_s)
    tracker.run_dir = run_dir
    runs.write_text(run_dir / "run.json", json.dumps({"run_id": tracker.run_id, "tracking_uri": tracker.uri}))
    params = C.flatten(cfg)
    params.update(runs.version_params())
    params.update({"data.sha256": source.sha256, "data.classes": len(source.classes)})
    tracker.log_params(params)
    log.info(f"MLflow run {tracker.run_id} in experiment {experiment!r} at {tracker.uri}")
    return tracker


def _write_pictures(cfg: DictConfig, run_dir: Path, splits: Splits) -> None:
    """learning_curves.png always; augment_preview.png when the run augments (what the model saw)."""
    from clfops.data.augment import preview_grid
    from clfops.recorder import read_metrics
    from clfops.report.plots import learning_curves_png

    atomic_write_bytes(run_dir / "learning_curves.png", learning_curves_png(read_metrics(run_dir / "metrics.csv")))
    augment = Augment(augment_config(cfg.augment))
    if augment.enabled:
        gen = torch.Generator().manual_seed(int(cfg.seed))
        mean, std = _normalisation(cfg, splits)
        preview_grid(splits.train.x[:16], augment, gen, 16, run_dir / "augment_preview.png", mean, std)


def _log_run_files(tracker: Tracker, run_dir: Path) -> None:
    for name in (
        "config.yaml",
        "overrides.yaml",
        "metrics.csv",
        "summary.json",
        "model_summary.txt",
        "learning_curves.png",
        "augment_preview.png",
        "train.log",
    ):
        tracker.log_artifact(run_dir / name)


def _end_tracking(tracker: Tracker | None, run_dir: Path, err: BaseException | None) -> None:
    if err is None:
        status, message = "FINISHED", None
    elif isinstance(err, (KeyboardInterrupt, SystemExit)):
        status, message = "KILLED", str(err) or "interrupted"
    elif getattr(err, "run_status", None) in STATUSES:  # a deliberate stop, e.g. a sweep's pruned trial
        status, message = err.run_status, str(err)
    else:
        status, message = (
            "FAILED",
            f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}",
        )
    if run_dir.is_dir():
        runs.write_status(run_dir, status, message)
    if tracker is not None:
        tracker.log_artifact(run_dir / "train.log")
        tracker.end(status, message)
    if status != "FINISHED":
        print(f"run {status}: {run_dir}", file=sys.stderr)


def augment_config(aug: DictConfig) -> AugmentConfig:
    """configs/augment/*.yaml -> AugmentConfig (the yaml keys are its field names)."""
    return AugmentConfig(**C.to_container(aug))
