"""`clfops sweep`: an Optuna study (TPE sampler, median pruning on val/acc per epoch) over a space file.

Storage is an Optuna RDB URL in the same SQL family as tracking (sweep_storage.py). The study is the unit of
resume: `--study-name S` re-attaches and runs until S holds --trials finished (complete or pruned) trials.
Workers (--jobs) are processes, not threads: train() installs signal handlers and sets process-wide torch
threads and seeds, so two trainings cannot share a process; the workers share the study through its database.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import optuna
import yaml

from clfops import config as C
from clfops.safe_files import atomic_write_text
from clfops.tracking.redact import redact_uri
from clfops.tuning import TuningError
from clfops.tuning.search_space import Param, first_values, format_value, load_space, override_key, suggest
from clfops.tuning.storage import open_storage, storage_url
from clfops.tuning.study import StudyMember, quiet_console, slug, study_experiment, unique_run_name

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
PARENT_ATTR, URI_ATTR = "clfops.parent_run_id", "clfops.tracking_uri"


@dataclass
class SweepSettings:
    trials: int
    space_file: Path
    overrides: list[str] = field(default_factory=list)
    study_name: str | None = None
    storage: str | None = None
    jobs: int = 1
    out: Path | None = None
    prune_startup: int = 5  # trials that finish before the pruner judges anyone (Optuna's default)
    prune_warmup: int = 1  # epochs every trial runs before it can be pruned
    verbose: bool = False


@dataclass(frozen=True)
class Context:
    """What a worker process needs (picklable)."""

    settings: SweepSettings
    space: list[Param]
    study_name: str
    url: str
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


def _quiet_optuna(verbose: bool) -> None:
    if not verbose:  # one line per trial is ours; a failure's reason is in that line and the run's train.log
        optuna.logging.set_verbosity(optuna.logging.ERROR)


def worker(ctx: Context, n_trials: int, index: int) -> None:
    """Run up to `n_trials` trials of the study; also stops once the study holds --trials finished ones."""
    from optuna.study import MaxTrialsCallback

    _quiet_optuna(ctx.settings.verbose)
    storage = open_storage(ctx.url)
    existing = len(storage.get_all_trials(storage.get_study_id_from_name(ctx.study_name), deepcopy=False))
    # Seeded per worker and per resume: equal seeds would make two workers (or a resumed study) replay the
    # random start-up samples of TPE.
    sampler = optuna.samplers.TPESampler(seed=ctx.seed + 7919 * index + existing)
    pruner = optuna.pruners.MedianPruner(ctx.settings.prune_startup, ctx.settings.prune_warmup)
    study = optuna.load_study(study_name=ctx.study_name, storage=storage, sampler=sampler, pruner=pruner)
    target = ctx.settings.trials
    callbacks = [MaxTrialsCallback(target, states=FINISHED), _progress(target)]
    study.optimize(lambda t: _objective(ctx, t), n_trials=n_trials, catch=(Exception,), callbacks=callbacks)


def _worker_process(ctx: Context, n_trials: int, index: int) -> None:
    import sys

    try:
        worker(ctx, n_trials, index)
    except KeyboardInterrupt as err:  # the run already ended KILLED; 128 + signal, like `clfops train`
        sys.exit(128 + getattr(err, "signum", 2))


def _run_processes(ctx: Context, shares: list[int]) -> None:
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


@dataclass
class SweepResult:
    study_name: str
    storage: str  # password hidden
    finished: int
    best_value: float | None
    best_trial: int | None
    command: str | None
    files: list[Path]


def _parent_run(study: optuna.Study, cfg: Any, name: str, storage: str, space: list[Param]) -> Any:
    """The study's MLflow parent run: reopened when the study already has one on this store, else started."""
    from clfops.tracking import Tracker, TrackingError, resolve_uri

    if not cfg.tracking.enabled:
        return None
    uri, timeout = resolve_uri(cfg.tracking.uri), cfg.tracking.connect_timeout_s
    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id and study.user_attrs.get(URI_ATTR) == redact_uri(uri):
        try:
            return Tracker.reopen(uri, run_id, timeout)
        except TrackingError:
            pass  # deleted, or another store: a new parent for the trials from here on
    tags = {"clfops.study": name, "clfops.study.kind": "sweep", "clfops.optuna.storage": storage}
    parent = Tracker.start(uri, study_experiment(cfg), f"sweep-{name}", tags, timeout)
    parent.log_params({f"space.{p.name}": json.dumps(p.__dict__, default=list) for p in space})
    study.set_user_attr(PARENT_ATTR, parent.run_id)
    study.set_user_attr(URI_ATTR, redact_uri(uri))
    return parent


def run_sweep(s: SweepSettings) -> SweepResult:
    """Create or re-attach the study, run the missing trials (in `jobs` processes), write the best recipe."""
    from clfops.hardware import available_cores

    if s.trials < 1 or s.jobs < 1:
        raise TuningError("--trials and --jobs must be >= 1")
    _quiet_optuna(s.verbose)
    space = load_space(s.space_file)
    keys = {p.name for p in space}
    base = [o for o in s.overrides if override_key(o) not in keys]
    cfg = C.compose("train", [*base, *first_values(space)])  # a space key the config lacks fails here
    url = storage_url(s.storage, cfg.tracking.uri)
    storage = open_storage(url)
    name = s.study_name or f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise TuningError(f"study {name!r} minimises its objective; a clfops sweep maximises val/acc: use another name")
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    remaining, jobs = max(0, s.trials - done), min(s.jobs, max(1, s.trials - done))
    parent = _parent_run(study, cfg, name, redact_uri(url), space)
    print(
        f"study {name} in {redact_uri(url)}: {done} finished trials, {remaining} to run with {jobs} worker(s)"
        f"{f'; MLflow parent run {parent.run_id}' if parent else ''}  (resume: --study-name {name})",
        flush=True,
    )
    plumbing = ["logging.progress=none", f"tracking.experiment={study_experiment(cfg)}"]
    if jobs > 1 and not any(override_key(o) == "trainer.num_threads" for o in base):
        plumbing.append(f"trainer.num_threads={max(1, available_cores() // jobs)}")  # workers share the cores
    ctx = Context(s, space, name, url, parent.run_id if parent else None, base, plumbing, str(cfg.run.root), cfg.seed)
    try:
        if remaining and jobs == 1:
            with quiet_console(s.verbose):
                worker(ctx, remaining, 0)
        elif remaining:
            _run_processes(ctx, [remaining // jobs + (i < remaining % jobs) for i in range(jobs)])
    except BaseException:
        if parent is not None:
            parent.end("KILLED", "sweep interrupted")
        raise
    result = write_outputs(optuna.load_study(study_name=name, storage=storage), ctx, s.out or Path("studies") / name)
    if parent is not None:
        if result.best_value is not None:
            parent.log_metrics({"sweep/best_val_acc": result.best_value}, step=result.finished)
            parent.set_tags({"clfops.study.best_trial": str(result.best_trial)})
        for path in result.files:
            parent.log_artifact(path, "sweep")
        parent.end("FINISHED")
    return result


def write_outputs(study: optuna.Study, ctx: Context, out: Path) -> SweepResult:
    """trials.csv always; with a completed trial also best_overrides.yaml (the recipe) and best.json."""
    import csv
    import io

    out.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    names = [p.name for p in ctx.space]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["trial", "state", "val_acc", "seconds", *names, "test_acc", "run_id", "error"])
    for t in trials:
        seconds = round(t.duration.total_seconds(), 1) if t.duration else ""
        params = [format_value(t.params[n]) if n in t.params else "" for n in names]
        attrs = [t.user_attrs.get(k, "") for k in ("test_acc", "run_id", "error")]
        writer.writerow(
            [t.number, t.state.name, "" if t.value is None else round(t.value, 4), seconds, *params, *attrs]
        )
    files = [out / "trials.csv"]
    atomic_write_text(files[0], buf.getvalue())
    finished = sum(1 for t in trials if t.state in FINISHED)
    storage = redact_uri(ctx.url)
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in trials):
        return SweepResult(ctx.study_name, storage, finished, None, None, None, files)
    best = study.best_trial
    recipe = [*ctx.base, *(f"{k}={format_value(v)}" for k, v in best.params.items())]
    command = "clfops train " + " ".join(shlex.quote(o) for o in recipe)
    header = (
        f"# Best trial {best.number} of Optuna study {ctx.study_name!r} ({storage}): val/acc {best.value:.4f}\n"
        f"# MLflow run {best.user_attrs.get('run_id') or '-'}. Run this recipe with:\n#   {command}\n"
    )
    files += [out / "best_overrides.yaml", out / "best.json"]
    atomic_write_text(files[1], header + yaml.safe_dump(recipe, default_flow_style=False, sort_keys=False))
    info = {"study": ctx.study_name, "storage": storage, "trial": best.number, "val_acc": best.value}
    info |= {"params": best.params, "overrides": recipe, "command": command, "run_id": best.user_attrs.get("run_id")}
    atomic_write_text(files[2], json.dumps(info, indent=2))
    return SweepResult(ctx.study_name, storage, finished, best.value, best.number, command, files)
