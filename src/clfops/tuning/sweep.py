"""`clfops sweep`: an Optuna study (TPE sampler, median pruning on val/acc per epoch) over a space file.

Storage is an Optuna RDB URL in the same SQL family as tracking (storage.py). The study is the unit of resume:
`--study-name S` re-attaches and runs until S holds --trials finished (complete or pruned) trials. The trials
themselves, in this process or in --jobs worker processes, are trials.py's; this module creates or re-attaches
the study and its MLflow parent run, and writes the trials table and the best recipe.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

from clfops import config as C
from clfops.safe_files import atomic_write_text
from clfops.tracking.redact import redact_uri
from clfops.tuning import TuningError
from clfops.tuning.search_space import Param, first_values, format_value, load_space
from clfops.tuning.storage import open_storage, storage_url
from clfops.tuning.study import quiet_console, study_experiment
from clfops.tuning.trials import FINISHED, Context, quiet_optuna, run_processes, worker

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
    quiet_optuna(s.verbose)
    space = load_space(s.space_file)
    keys = {p.name for p in space}
    base = [o for o in s.overrides if C.override_key(o) not in keys]
    cfg = C.compose("train", [*base, *first_values(space)])  # a space key the config lacks fails here
    url = storage_url(s.storage, cfg.tracking.uri)
    name = s.study_name or f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    storage, study = _open_study(url, name)
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    remaining, jobs = max(0, s.trials - done), min(s.jobs, max(1, s.trials - done))
    parent = _parent_run(study, cfg, name, redact_uri(url), space)
    print(
        f"study {name} in {redact_uri(url)}: {done} finished trials, {remaining} to run with {jobs} worker(s)"
        f"{f'; MLflow parent run {parent.run_id}' if parent else ''}  (resume: --study-name {name})",
        flush=True,
    )
    plumbing = ["logging.progress=none", f"tracking.experiment={study_experiment(cfg)}"]
    if jobs > 1 and not any(C.override_key(o) == "trainer.num_threads" for o in base):
        plumbing.append(f"trainer.num_threads={max(1, available_cores() // jobs)}")  # workers share the cores
    ctx = Context(
        space=space,
        study_name=name,
        url=url,
        target=s.trials,
        prune_startup=s.prune_startup,
        prune_warmup=s.prune_warmup,
        verbose=s.verbose,
        parent_run_id=parent.run_id if parent else None,
        base=base,
        plumbing=plumbing,
        run_root=str(cfg.run.root),
        seed=cfg.seed,
    )
    _run_trials(ctx, remaining, jobs, parent)
    result = write_outputs(optuna.load_study(study_name=name, storage=storage), ctx, s.out or Path("studies") / name)
    if parent is not None:
        _finish_parent(parent, result)
    return result


def _open_study(url: str, name: str) -> tuple[Any, optuna.Study]:
    """The storage and the study `name` in it, created when new; a study that minimises is refused."""
    storage = open_storage(url)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise TuningError(f"study {name!r} minimises its objective; a clfops sweep maximises val/acc: use another name")
    return storage, study


def _run_trials(ctx: Context, remaining: int, jobs: int, parent: Any) -> None:
    """`remaining` trials in this process (jobs=1) or shared out over `jobs` processes; an interrupted sweep
    ends its parent run KILLED."""
    try:
        if remaining and jobs == 1:
            with quiet_console(ctx.verbose):
                worker(ctx, remaining, 0)
        elif remaining:
            run_processes(ctx, [remaining // jobs + (i < remaining % jobs) for i in range(jobs)])
    except BaseException:
        if parent is not None:
            parent.end("KILLED", "sweep interrupted")
        raise


def _finish_parent(parent: Any, result: SweepResult) -> None:
    if result.best_value is not None:
        parent.log_metrics({"sweep/best_val_acc": result.best_value}, step=result.finished)
        parent.set_tags({"clfops.study.best_trial": str(result.best_trial)})
    for path in result.files:
        parent.log_artifact(path, "sweep")
    parent.end("FINISHED")


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
