"""`clfops train`: one run from a resolved config to a tested model, its files and its MLflow run.

`train(cfg)` reads top to bottom: prepare (validate; nothing exists yet) -> create the run dir -> load data
-> start tracking -> fit -> test & save the best weights -> pictures -> log the model -> summary.json (built
once, written once) -> the run files to MLflow -> status FINISHED. Any exception on the way ends the run
FAILED or KILLED in one place (`lifecycle.RunEnding`). It returns the summary as a plain dict; the CLI and the
tests call it the same way.

In a multi-process run every process calls `train(cfg)`: rank 0 does all of the above, the other ranks only
fit (`_train_worker`) and write nothing (see clfops.distributed).
"""

from __future__ import annotations

import logging
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig

from clfops import config as C
from clfops.data.loader import Splits, eval_loader, on_device, train_loader
from clfops.errors import RunFailed
from clfops.models import count_params
from clfops.tracking import Tracker
from clfops.tracking import rundirs as runs
from clfops.training.build import build_module, make_strategy, make_trainer
from clfops.training.callbacks import GracefulStop, RunInfo, RunInterrupted
from clfops.training.context import Fitted, Hardware, RunContext, RunSetup, prepare
from clfops.training.distributed import WatchedDDPStrategy, lost_peer
from clfops.training.finish import Tested, log_run_files, test_and_save, write_pictures
from clfops.training.lifecycle import RunEnding, start_tracking
from clfops.training.module import Classifier
from clfops.training.preflight import load_data, preflight
from clfops.training.recorder import RunLogger
from clfops.training.schedules import build_optimizer
from clfops.training.summary import ModelLog, RunSummary

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
    setup = prepare(cfg, list(overrides or []))  # a user mistake stops here: no run dir, no MLflow run
    if not setup.rank.is_zero:
        return _train_worker(setup)
    prepared = preflight(setup.cfg, setup.resume, setup.parent)  # config, data, store: before anything exists
    setup.clock.lap("data")
    run_dir = setup.resume.run_dir if setup.resume else runs.create(Path(cfg.run.root).resolve(), cfg.run.name)
    ending = RunEnding(run_dir)
    strategy = make_strategy(setup.cfg, ending.rank_stuck)
    clock = setup.clock
    with _held(run_dir) as stop:
        try:
            _start_run(setup, run_dir)
            clock.lap("run_start")
            source, splits = prepared.source, prepared.splits
            ending.tracker = start_tracking(setup, run_dir, prepared)
            clock.lap("tracking_start")
            ctx = RunContext(setup, run_dir, source, splits, ending.tracker, prepared.init)
            fitted = _fit(ctx, strategy, stop, extra_callbacks or [])
            tested = test_and_save(ctx, fitted)
            clock.lap("fit_and_test")
            write_pictures(ctx)
            clock.lap("pictures")
            model = _log_model(ctx, tested)
            clock.lap("model_log")
            summary = RunSummary.build(ctx, tested, model, offline=_flushed_offline(ctx.tracker))
            summary.write()
            if ctx.tracker is not None:
                log_run_files(ctx.tracker, run_dir)
        except BaseException as err:
            replacement = ending.failed(err, strategy)  # status FAILED/KILLED, here and in MLflow
            if replacement is not None:
                raise replacement from None
            raise
    ending.finished()  # as before: once train.log is complete and the run dir unlocked
    return summary.as_dict()


@contextmanager
def _held(run_dir: Path) -> Iterator[GracefulStop]:
    """While rank 0 trains: RUN_DIR/.lock held, train.log attached, SIGTERM/Ctrl-C handled by `GracefulStop`."""
    run_lock = runs.lock(run_dir)
    handler = runs.attach_log_file(run_dir / "train.log")
    stop = GracefulStop(run_dir / "checkpoints" / "last.ckpt")
    stop.install()
    try:
        yield stop
    finally:
        stop.uninstall()
        runs.detach_log_file(handler)
        runs.unlock(run_lock)


def _start_run(setup: RunSetup, run_dir: Path) -> None:
    """A new run writes its config and overrides; a resumed one says where it continues. Status RUNNING."""
    log.info(f"run dir {run_dir}  (threads {setup.threads}, precision {setup.precision})")
    resume = setup.resume
    if resume is not None:
        where = "mid-epoch" if resume.mid_epoch else "after epoch"
        changed = setup.changed or "nothing"
        log.info(f"resuming from {resume.checkpoint} ({where} {resume.epoch + 1}); changed: {changed}")
    else:
        runs.write_text(run_dir / "config.yaml", C.to_yaml(setup.cfg))  # redacted: no password in a run dir
        runs.write_text(run_dir / "overrides.yaml", "".join(f"- {o}\n" for o in setup.overrides) or "[]\n")
    runs.write_status(run_dir, "RUNNING")


def _size(size: Any) -> tuple[int, int] | None:
    return None if size is None else (int(size[0]), int(size[1]))


def _train_worker(setup: RunSetup) -> dict[str, Any]:
    """Ranks > 0: the same data, net and Trainer as rank 0, fit only. Their Trainer needs a directory, but
    Lightning writes checkpoints and logs on rank 0 only: a scratch one, removed at the end."""
    source, splits = load_data(setup.cfg, setup.resume)
    with tempfile.TemporaryDirectory(prefix=f"clfops-rank{setup.rank.rank}-") as scratch:
        ctx = RunContext(setup, Path(scratch), source, splits, tracker=None)
        try:
            _fit(ctx, make_strategy(setup.cfg, None), None, [])
        except RuntimeError as err:  # a survivor of a lost node (torchrun/srun) says so in one line, as rank 0
            lost = lost_peer(err)
            if lost is None:
                raise
            raise RunFailed(f"rank {setup.rank.rank}: {lost}") from None
    return {"rank": setup.rank.rank}


def _fit(
    ctx: RunContext, strategy: str | WatchedDDPStrategy, stop: GracefulStop | None, extra: list[L.Callback]
) -> Fitted:
    """Lightning's fit from the run's config; `stop` (rank 0) turns SIGTERM/Ctrl-C into a resumable stop."""
    cfg, run_dir, resume = ctx.cfg, ctx.run_dir, ctx.resume
    keep = (resume.epoch, resume.global_step) if resume else None
    logger = RunLogger(run_dir, ctx.tracker, bool(cfg.logging.tensorboard), keep)
    info = RunInfo(C.to_container(cfg), ctx.source.classes, ctx.source.sha256)
    callbacks = [info, *([stop] if stop is not None else []), *extra]
    if cfg.data.name == "stream":  # litdata loaders: they shard by DDP rank themselves
        from clfops.data.stream import StreamEpoch, stream_loaders

        callbacks.append(StreamEpoch())
    trainer, ckpt = make_trainer(cfg, run_dir, ctx.precision, logger, callbacks, strategy)
    if cfg.data.name == "stream":
        train_dl, val_dl = stream_loaders(cfg.data, cfg.seed, trainer.global_rank, trainer.world_size)
    else:  # each rank takes its share of every epoch (global_rank/world_size come from the environment)
        # On a GPU the images go to this rank's device once, before the first batch (data.loader.on_device).
        rank, world, device = trainer.global_rank, trainer.world_size, trainer.strategy.root_device
        train_dl = train_loader(on_device(ctx.splits.train, device), cfg.data.batch_size, cfg.seed, rank, world)
        val_dl = eval_loader(on_device(ctx.splits.val, device), cfg.data.eval_batch_size, rank, world)
    module = build_module(cfg, ctx.source, ctx.splits, steps_per_epoch=len(train_dl), init=ctx.init)
    if ctx.tracker is not None:
        _log_model_params(ctx.tracker, module, ctx.splits)
        if resume is None:  # MLflow params never change: a run resumed on another machine keeps its first one's
            ctx.tracker.log_params(Hardware.of(trainer, ctx.precision).params())
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
    return Fitted(trainer, ckpt, module, logger, time.perf_counter() - t0)


def _log_model_params(tracker: Tracker, module: Classifier, splits: Splits) -> None:
    optimizer = build_optimizer(module.net, module.settings.optimizer)  # only to record its class and defaults
    defaults = {f"optimizer.defaults.{k}": v for k, v in optimizer.defaults.items() if k != "params"}
    sizes = {f"data.images.{name}": len(getattr(splits, name)) for name in ("train", "val", "test")}
    sizes["data.test_split"] = splits.test_split  # val: the data had no test split (test/* scored on val)
    params = {"model.parameters": count_params(module.net)}
    tracker.log_params(params | {"optimizer.class": type(optimizer).__name__} | defaults | sizes)


def _log_model(ctx: RunContext, tested: Tested) -> ModelLog:
    """The safe pyfunc model in the MLflow run (~0.5 s), and a registry version when `register_as` is set."""
    if ctx.tracker is None or not ctx.cfg.tracking.log_model:
        return ModelLog()
    from clfops.registry.register import log_run_model

    example = ctx.splits.test.x[:2].numpy()  # two real images: the model's input example
    torch_flavor, register_as = bool(ctx.cfg.tracking.log_torch_flavor), ctx.cfg.tracking.register_as
    onnx = bool(ctx.cfg.tracking.log_onnx)  # the torch-free ONNX model beside the pyfunc one
    logged = log_run_model(ctx.tracker, tested.model_dir, example, torch_flavor, register_as, onnx)
    return ModelLog.from_registry(logged)


def _flushed_offline(tracker: Tracker | None) -> bool:
    """Whether the MLflow run lacks part of this run, after the queued metric points were waited on (where a
    lost server shows). summary.json records it; a loss during the last uploads warns with the sync hint."""
    if tracker is None:
        return False
    tracker.flush()
    return tracker.offline
