"""The trials of `clfops sweep`: one trial is one `clfops train` run (Optuna's objective: its best val/acc), pruned
by the median rule on val/acc per epoch; a worker runs trials until the study holds --trials finished ones, in
this process or in `--jobs` spawned processes that share the study through its database.

Workers are processes, not threads: train() installs signal handlers and sets process-wide torch threads and
seeds, so two trainings cannot share a process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import optuna

from clfops import config as C
from clfops.tuning import TuningError
from clfops.tuning.search_space import Param, format_value, suggest
from clfops.tuning.storage import open_storage
from clfops.tuning.study import StudyMember, slug, unique_run_name

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@dataclass(frozen=True)
class Context:
    """What a worker process needs (picklable)."""

    space: list[Param]
    study_name: str
    url: str
    target: int  # --trials: a worker stops once the study holds this many finished trials
    prune_startup: int  # SweepSettings.prune_startup / prune_warmup: the median pruner's patience
    prune_warmup: int
    verbose: bool
    parent_run_id: str | None
    base: list[str]  # the recipe: user overrides minus the space's keys
    plumbing: list[str]  # worker-only overrides: no progress bar, pinned experiment, threads
    run_root: str
    seed: int


class TrialPrunedRun(optuna.TrialPruned):
    """Optuna's TrialPruned, carrying the MLflow status its run should end with (read by train's end of run)."""

    run_status = "KILLED"


class PruneOnVal(L.Callback):
    """Reports val/acc after each validation (step = epoch) and stops the trial when the pruner says so."""

    def __init__(self, trial: optuna.Trial, monitor: str = "val/acc") -> None:
        self.trial, self.monitor = trial, monitor

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None:
            return
        epoch = trainer.current_epoch
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            raise TrialPrunedRun(f"pruned at epoch {epoch + 1}: {self.monitor} {float(value):.4f} below the median")


def _objective(ctx: Context, trial: optuna.Trial) -> float:
    from clfops.tracking import end_pruned
    from clfops.training.train import train

    name = unique_run_name(Path(ctx.run_root), f"{slug(ctx.study_name)}-t{trial.number:03d}")
    run_ov = [*ctx.plumbing[:1], *ctx.base, *ctx.plumbing[1:], *suggest(trial, ctx.space), f"run.name={name}"]
    member = StudyMember(ctx.parent_run_id, {"clfops.study": ctx.study_name, "clfops.trial": str(trial.number)})
    try:
        summary = train(C.compose("train", run_ov), run_ov, [member, PruneOnVal(trial)])
    except optuna.TrialPruned as err:
        # train() ended the run KILLED (the exception's run_status); mark it as pruned for the UI.
        if member.run_id and member.uri:
            end_pruned(member.uri, member.run_id, str(err))
        raise
    except Exception as err:
        trial.set_user_attr("error", f"{type(err).__name__}: {(str(err).strip() or '-').splitlines()[0][:200]}")
        raise
    finally:
        trial.set_user_attr("run_id", member.run_id or "")
        trial.set_user_attr("run_dir", str(member.run_dir or ""))
    if summary["best_val_acc"] is None:
        raise TuningError("no val/acc to optimise: the sweep needs data.val_fraction > 0")
    trial.set_user_attr("test_acc", summary["test_acc"])
    return float(summary["best_val_acc"])


def _progress(target: int):
    def report(study: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
        if t.state == optuna.trial.TrialState.COMPLETE:
            result = f"val/acc {t.value:.4f}"
        elif t.state == optuna.trial.TrialState.PRUNED and t.intermediate_values:
            last = max(t.intermediate_values)
            result = f"at epoch {last + 1} (val/acc {t.intermediate_values[last]:.4f})"
        else:
            result = str(t.user_attrs.get("error", ""))
        done = sum(1 for x in study.get_trials(deepcopy=False, states=FINISHED))
        try:
            best = f"best {study.best_value:.4f} (trial {study.best_trial.number})"
        except ValueError:  # no trial completed yet
            best = "best -"
        params = " ".join(f"{k}={format_value(v)}" for k, v in t.params.items())
        line = f"[{done}/{target}] trial {t.number:>3} {t.state.name:<8} {result}  {params}  | {best}"
        print(line, flush=True)

    return report


def quiet_optuna(verbose: bool) -> None:
    if not verbose:  # one line per trial is ours; a failure's reason is in that line and the run's train.log
        optuna.logging.set_verbosity(optuna.logging.ERROR)


def worker(ctx: Context, n_trials: int, index: int) -> None:
    """Run up to `n_trials` trials of the study; also stops once the study holds --trials finished ones."""
    from optuna.study import MaxTrialsCallback

    quiet_optuna(ctx.verbose)
    storage = open_storage(ctx.url)
    existing = len(storage.get_all_trials(storage.get_study_id_from_name(ctx.study_name), deepcopy=False))
    # Seeded per worker and per resume: equal seeds would make two workers (or a resumed study) replay the
    # random start-up samples of TPE.
    sampler = optuna.samplers.TPESampler(seed=ctx.seed + 7919 * index + existing)
    pruner = optuna.pruners.MedianPruner(ctx.prune_startup, ctx.prune_warmup)
    study = optuna.load_study(study_name=ctx.study_name, storage=storage, sampler=sampler, pruner=pruner)
    target = ctx.target
    callbacks = [MaxTrialsCallback(target, states=FINISHED), _progress(target)]
    study.optimize(lambda t: _objective(ctx, t), n_trials=n_trials, catch=(Exception,), callbacks=callbacks)


def _worker_process(ctx: Context, n_trials: int, index: int) -> None:
    import sys

    try:
        worker(ctx, n_trials, index)
    except KeyboardInterrupt as err:  # the run already ended KILLED; 128 + signal, like `clfops train`
        sys.exit(128 + getattr(err, "signum", 2))


def run_processes(ctx: Context, shares: list[int]) -> None:
    import multiprocessing
    import signal

    from clfops.training.callbacks import RunInterrupted

    spawn = multiprocessing.get_context("spawn")  # fork after torch/MLflow threads started is unsafe
    procs = [spawn.Process(target=_worker_process, args=(ctx, n, i), name=f"sweep-{i}") for i, n in enumerate(shares)]

    def forward_sigterm(signum: int, frame: Any) -> None:  # SIGTERM for the sweep alone (kill, systemd)
        for p in procs:
            if p.is_alive() and p.pid:
                os.kill(p.pid, signal.SIGTERM)
        raise RunInterrupted(signal.SIGTERM)  # exit 143, like `clfops train`

    for p in procs:
        p.start()
    previous = signal.signal(signal.SIGTERM, forward_sigterm)
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        # Ctrl-C reaches the whole process group: each worker's run stops at a batch boundary (resumable,
        # KILLED). Give them a minute, then stop what is left.
        for p in procs:
            p.join(60)
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(10)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    codes = [p.exitcode for p in procs if p.exitcode]
    if any(code in (130, 143) or code < 0 for code in codes):  # a signal reached the workers only
        raise KeyboardInterrupt("sweep interrupted")
    if codes:
        raise TuningError(f"a sweep worker exited with code {codes[0]}: see its messages above")
