"""`clfops train`: one run from a resolved config to a tested model, its files and its MLflow run.

The path: threads + seed -> run dir -> data (uint8 tensors) -> net + Classifier -> Lightning Trainer.fit
-> test with the best weights -> model files + summary.json -> MLflow status. `train(cfg)` returns the
summary dict; the CLI and the tests call it the same way.

In a multi-process run every process calls `train(cfg)`: rank 0 does all of the above, the other ranks only
fit (`_train_worker`) and write nothing (see clfops.distributed).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from clfops import config as C
from clfops.data import Source
from clfops.data.loader import Splits, eval_loader, make_splits, train_loader
from clfops.data.sources import load_source
from clfops.errors import RunFailed
from clfops.hardware import configure_threads, resolve_precision
from clfops.models import count_params
from clfops.safe_files import CheckpointError, atomic_write_text
from clfops.serving.saved_model import save_model
from clfops.tracking import STATUSES, Tracker, run_dir_lookup
from clfops.tracking import rundirs as runs
from clfops.training.build import build_module, check_settings, make_strategy, make_trainer
from clfops.training.callbacks import GracefulStop, RunInfo, RunInterrupted
from clfops.training.checkpoint import ResumePoint, check_compatible, find_resume
from clfops.training.distributed import Rank, WatchedDDPStrategy, process_rank
from clfops.training.finish import log_run_files, manifest_for, test_best, timings, write_pictures
from clfops.training.module import Classifier
from clfops.training.progress import quiet_libraries
from clfops.training.progress_bar import stage_bar
from clfops.training.recorder import EpochStats, RunLogger
from clfops.training.schedules import build_optimizer
from clfops.training.timings import StageClock, process_age_seconds

log = logging.getLogger("clfops")


def train(
    cfg: DictConfig, overrides: list[str] | None = None, extra_callbacks: list[L.Callback] | None = None
) -> dict[str, Any]:
    """Train, test and record one run; returns the summary (also written to RUN_DIR/summary.json).

    `extra_callbacks` join the run's Lightning callbacks (studies: parent-run tagging, Optuna pruning).

    With `resume=` set, the run continues in its own run dir and MLflow run, from its checkpoint's config
    plus `overrides`; a change that breaks the run (other model or data) is refused before anything runs.
    A different number of processes is allowed (a DDP checkpoint resumes in one process and the reverse).
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
    check_settings(cfg)
    rank = process_rank(cfg.trainer.devices, cfg.trainer.num_nodes)
    threads = configure_threads(cfg.trainer.num_threads, rank.local_processes)
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    L.seed_everything(cfg.seed, workers=False, verbose=False)
    torch.use_deterministic_algorithms(bool(cfg.deterministic), warn_only=True)
    if not rank.is_zero:
        return _train_worker(cfg, rank, precision, resume)
    run_dir = resume.run_dir if resume else runs.create(Path(cfg.run.root).resolve(), cfg.run.name)
    run_lock = runs.lock(run_dir)
    handler = runs.attach_log_file(run_dir / "train.log")
    stop = GracefulStop(run_dir / "checkpoints" / "last.ckpt")
    stop.install()
    tracker: Tracker | None = None
    strategy = make_strategy(cfg, lambda message: _rank_stuck(tracker, run_dir, message))
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
        source, splits = _load_data(cfg, resume)
        data_s = time.perf_counter() - t0
        clock = StageClock()
        tracker = _start_tracking(cfg, run_dir, source, overrides, resume, changed)
        clock.lap("tracking_start")
        fitted = _fit(cfg, run_dir, source, splits, tracker, precision, stop, resume, extra_callbacks or [], strategy)
        summary = _test_and_save(cfg, run_dir, source, splits, tracker, *fitted)
        summary.update(data_seconds=round(data_s, 3), total_seconds=round(time.perf_counter() - t_start, 3))
        clock.lap("fit_and_test")
        write_pictures(cfg, run_dir, splits)
        clock.lap("pictures")
        if tracker is not None and cfg.tracking.log_model:  # the safe pyfunc model (~0.5 s), + a version if asked
            from clfops.registry.promote import log_run_model

            example = splits.test.x[:2].numpy()  # two real images: the model's input example
            torch_flavor, register_as = bool(cfg.tracking.log_torch_flavor), cfg.tracking.register_as
            summary.update(log_run_model(tracker, Path(summary["model_dir"]), example, torch_flavor, register_as))
        summary["timings"] = timings(summary, clock, startup_s)
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
        if tracker is not None:
            log_run_files(tracker, run_dir)
    except BaseException as err:
        failure = strategy.rank_failure() if isinstance(strategy, WatchedDDPStrategy) else None
        # Another rank died: name it, not the collective's "connection closed" that rank 0 saw as a result.
        resume_hint = f"; the run is FAILED; continue it with: clfops train resume={run_dir}"
        ended = RunFailed(f"{failure}{resume_hint}") if failure is not None else err
        _end_tracking(tracker, run_dir, ended)
        if ended is not err:
            raise ended from None
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


def _load_data(cfg: DictConfig, resume: ResumePoint | None) -> tuple[Source, Splits]:
    if cfg.data.name == "stream":  # shards larger than memory (data/stream.py); sets data.mean/std if null
        from clfops.data.stream import open_stream

        source, splits = open_stream(cfg.data)
    else:
        source = load_source(cfg.data.name, cfg.data.root, cfg.data.channels, _size(cfg.data.size))
        splits = make_splits(source, cfg.data.val_fraction, cfg.seed, cfg.data.train_limit, cfg.data.test_limit)
    if resume is not None and source.sha256 != resume.data_sha256:
        raise CheckpointError(f"cannot resume: the data changed since the checkpoint (sha256 {source.sha256[:12]}…)")
    return source, splits


def _train_worker(cfg: DictConfig, rank: Rank, precision: str, resume: ResumePoint | None) -> dict[str, Any]:
    """Ranks > 0: the same data, net and Trainer as rank 0, fit only. Their Trainer needs a directory, but
    Lightning writes checkpoints and logs on rank 0 only: a scratch one, removed at the end."""
    source, splits = _load_data(cfg, resume)
    with tempfile.TemporaryDirectory(prefix=f"clfops-rank{rank.rank}-") as scratch:
        _fit(cfg, Path(scratch), source, splits, None, precision, None, resume, [], make_strategy(cfg, None))
    return {"rank": rank.rank}


def _rank_stuck(tracker: Tracker | None, run_dir: Path, message: str) -> None:
    """Rank 0 is blocked in a collective after another rank died: fail the run from the watch thread, then exit."""
    _end_tracking(tracker, run_dir, RunFailed(f"{message}; rank 0 was blocked waiting for it"))
    print(f"clfops: error: {message}; the run is FAILED: {run_dir}", file=sys.stderr, flush=True)
    os._exit(1)


def _size(size: Any) -> tuple[int, int] | None:
    return None if size is None else (int(size[0]), int(size[1]))


def _fit(
    cfg: DictConfig,
    run_dir: Path,
    source: Source,
    splits: Splits,
    tracker: Tracker | None,
    precision: str,
    stop: GracefulStop | None,
    resume: ResumePoint | None,
    extra: list[L.Callback],
    strategy: str | WatchedDDPStrategy,
) -> tuple[L.Trainer, ModelCheckpoint, Classifier, RunLogger, float]:
    """Lightning's fit: (trainer, checkpoint callback, module, logger, training seconds)."""
    keep = (resume.epoch, resume.global_step) if resume else None
    logger = RunLogger(run_dir, tracker, bool(cfg.logging.tensorboard), keep)
    info = RunInfo(C.to_container(cfg), source.classes, source.sha256)
    callbacks = [info, *([stop] if stop is not None else []), *extra]
    if cfg.data.name == "stream":  # litdata loaders: they shard by DDP rank themselves
        from clfops.data.stream import StreamEpoch, stream_loaders

        callbacks.append(StreamEpoch())
    trainer, ckpt = make_trainer(cfg, run_dir, precision, logger, callbacks, strategy)
    if cfg.data.name == "stream":
        train_dl, val_dl = stream_loaders(cfg.data, cfg.seed)
    else:  # each rank takes its share of every epoch (global_rank/world_size come from the environment)
        train_dl = train_loader(splits.train, cfg.data.batch_size, cfg.seed, trainer.global_rank, trainer.world_size)
        val_dl = eval_loader(splits.val, cfg.data.eval_batch_size, trainer.global_rank, trainer.world_size)
    module = build_module(cfg, source, splits, steps_per_epoch=len(train_dl))
    if tracker is not None:
        _log_model_params(tracker, module, precision, splits)
    runs.write_text(run_dir / "model_summary.txt", f"{module.net}\n\nparameters: {count_params(module.net):,}\n")
    t0 = time.perf_counter()
    ckpt_path = str(resume.checkpoint) if resume else None
    signum = lambda: (stop.requested if stop else None) or signal.SIGINT  # noqa: E731  Ctrl-C unless SIGTERM
    try:
        trainer.fit(module, train_dl, val_dl, ckpt_path=ckpt_path, weights_only=True)
    except SystemExit as err:  # Lightning's SIGTERMException, or its exit after a KeyboardInterrupt
        raise RunInterrupted(signum()) from err
    if trainer.interrupted:
        raise RunInterrupted(signum())
    return trainer, ckpt, module, logger, time.perf_counter() - t0


def _log_model_params(tracker: Tracker, module: Classifier, precision: str, splits: Splits) -> None:
    optimizer = build_optimizer(module.net, module.settings.optimizer)  # only to record its class and defaults
    defaults = {f"optimizer.defaults.{k}": v for k, v in optimizer.defaults.items() if k != "params"}
    sizes = {f"data.images.{name}": len(getattr(splits, name)) for name in ("train", "val", "test")}
    sizes["data.test_split"] = splits.test_split  # val: the data had no test split (test/* scored on val)
    params = {"model.parameters": count_params(module.net), "precision.resolved": precision}
    tracker.log_params(params | {"optimizer.class": type(optimizer).__name__} | defaults | sizes)


def _test_and_save(
    cfg: DictConfig,
    run_dir: Path,
    source: Source,
    splits: Splits,
    tracker: Tracker | None,
    trainer: L.Trainer,
    ckpt: ModelCheckpoint,
    module: Classifier,
    logger: RunLogger,
    train_s: float,
) -> dict[str, Any]:
    """The best weights: model files, the test report and `test/*` metrics; returns the summary."""
    val_s = next((c.validation_seconds for c in trainer.callbacks if isinstance(c, EpochStats)), 0.0)
    t_test = time.perf_counter()
    best = ckpt.best_model_path or ckpt.last_model_path
    best_val = float(ckpt.best_model_score) if ckpt.best_model_score is not None else None
    if best:
        module.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
    manifest = manifest_for(cfg, source, module, tracker)
    model_dir = save_model(run_dir / "model", module.net, manifest)
    inference = "bf16-mixed" if str(trainer.precision).startswith("bf16") else "32-true"  # as validation ran
    with stage_bar(cfg.logging.progress, f"test {len(splits.test):,} images"):
        test = test_best(cfg, run_dir, source, splits, module, manifest, tracker, inference)
    logger.log_metrics(test, step=trainer.global_step)  # metrics.csv + MLflow + TensorBoard, like the rest
    logger.save(durable=True)
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
        "processes": trainer.world_size,
        "train_seconds": round(train_s, 3),
        "validation_seconds": round(val_s, 3),
        "test_seconds": round(test_s, 3),
        "images": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        "test_split": splits.test_split,
        "classes": list(source.classes),
        "data_sha256": source.sha256,
        "best_checkpoint": best,
        "model_dir": str(model_dir),
    }


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
