"""The `clfops` command line: one thin function per command, no ML code, no heavy imports at module level.

`clfops --help` and `clfops train --help` import only click: torch, Lightning and MLflow load inside the
command that needs them. Every user mistake arrives here as an exception whose message is one line; it is
printed as `clfops: error: ...` with exit code 2 (never a traceback).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

from clfops.errors import UserError

EXIT_USAGE = 2


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user errors into one line + exit 2, Ctrl-C into exit 130."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt as err:
            # 128 + signal number, the shell's convention: 130 for Ctrl-C, 143 for SIGTERM.
            signum = getattr(err, "signum", 2)
            click.echo(f"clfops: {err or 'interrupted'}", err=True)
            sys.exit(128 + signum)
        except Exception as err:
            module = sys.modules.get("clfops.module")  # loaded iff training ran; don't import torch for this
            if module is not None and isinstance(err, module.NonFiniteLossError):  # diverged: exit 1
                click.echo(f"clfops: error: {err}", err=True)
                sys.exit(1)
            if isinstance(err, (UserError, ValueError)):
                message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                click.echo(f"clfops: error: {message}", err=True)
                sys.exit(EXIT_USAGE)
            raise

    return wrapper


def _train_help() -> str:
    from clfops.config import group_choices

    lines = [
        "Train a classifier. OVERRIDES use Hydra's grammar: key=value, group=choice.",
        "",
        "\b",
        "Config groups (pick one with group=choice):",
    ]
    lines += [f"  {group:<10} {', '.join(choices)}" for group, choices in group_choices().items()]
    lines += [
        "",
        "\b",
        "Examples:",
        "  clfops train",
        "  clfops train model=cnn optimizer=sgd optimizer.lr=0.05 trainer.max_epochs=10",
        "  clfops train data=folder data.root=/path/to/images augment=basic",
        "  clfops train +experiment=mnist_cnn",
        "  clfops train --cfg job          # print the resolved config and exit",
    ]
    return "\n".join(lines)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="clfops")
def main() -> None:
    """clfops: train, track, evaluate, promote and serve PyTorch image classifiers."""
    import logging

    logger = logging.getLogger("clfops")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


@main.command(
    help=_train_help(),
    context_settings={"ignore_unknown_options": True, "allow_extra_args": False},
)
@click.option("--cfg", "show_cfg", type=click.Choice(["job"]), help="Print the resolved config and exit.")
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@friendly
def train(show_cfg: str | None, overrides: tuple[str, ...]) -> None:
    from clfops.config import compose, to_yaml

    if "optimizer.lr=auto" in overrides:  # an LR range test first; the choice is recorded as tuning.lr_found
        from clfops.tune import resolve_lr_auto

        overrides, lr = resolve_lr_auto(list(overrides))
        click.echo(f"optimizer.lr=auto -> {lr:g} (LR range test)")
    cfg = compose("train", list(overrides))
    if show_cfg:
        click.echo(to_yaml(cfg), nl=False)
        return
    from clfops.train import train as run_train

    summary = run_train(cfg, list(overrides))
    click.echo(
        f"test accuracy {summary['test_acc']:.4f}  (best val {summary['best_val_acc'] or float('nan'):.4f}, "
        f"{summary['epochs']} epochs, {summary['train_seconds']:.1f}s training)"
    )
    click.echo(f"run dir: {summary['run_dir']}")
    if summary.get("tracking_offline"):
        click.echo(f"MLflow run {summary['run_id']} is incomplete (server lost): clfops sync {summary['run_dir']}")
    elif summary.get("run_id"):
        click.echo(f"MLflow run: {summary['run_id']}  ->  look at it with: clfops ui")


@main.command("augment-preview")
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@click.option("--out", default="augment_preview.png", show_default=True, help="PNG file to write.")
@click.option("-n", "count", default=16, show_default=True, help="Number of images.")
@friendly
def augment_preview(overrides: tuple[str, ...], out: str, count: int) -> None:
    """Write a grid of training images before and after augmentation (same overrides as train)."""
    from clfops.config import compose
    from clfops.preview import write_preview

    path = write_preview(compose("train", list(overrides)), out, count)
    click.echo(f"wrote {path}")


@main.command()
@click.argument("name", type=click.Choice(["fashion_mnist", "mnist", "cifar10"]))
@click.option("--root", default=None, help="Folder to put the files in (default: the data config's).")
@friendly
def fetch(name: str, root: str | None) -> None:
    """Make sure data set NAME is on disk (Debian's copy, or the official download, sha256-checked)."""
    from pathlib import Path

    from clfops.data.download import ensure
    from clfops.data.sources import default_root

    folder = ensure(name, Path(root) if root else default_root(name))
    click.echo(f"{name}: {folder}")


@main.command()
@click.option("--port", default=5000, show_default=True)
@click.option("--uri", default=None, help="Tracking store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db).")
@friendly
def ui(port: int, uri: str | None) -> None:
    """Start the MLflow UI on the local store, bound to 127.0.0.1."""
    import subprocess

    from clfops.tracking import client, resolve_uri

    store = resolve_uri(uri)
    client(store)  # creates/migrates the store once, under a lock
    click.echo(f"MLflow UI for {store} at http://127.0.0.1:{port}  (Ctrl-C to stop)")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host", "127.0.0.1"]
    sys.exit(subprocess.call([*cmd, "--port", str(port)]))


@main.command()
@click.option("--run-dir", type=click.Path(path_type=str), help="A run directory (uses RUN_DIR/model).")
@click.option("--checkpoint", type=click.Path(path_type=str), help="A Lightning checkpoint of a run (.ckpt).")
@click.option("--run-id", help="An MLflow run id (its logged model, else its local run dir).")
@click.option("--model-uri", help="runs:/ID/model, models:/NAME@ALIAS or models:/NAME/VERSION.")
@click.option(
    "--data", default="test", show_default=True, help="test | val (of the training data) | DATASET | IMAGE_FOLDER."
)
@click.option("--batch-size", default=256, show_default=True)
@click.option("--out", type=click.Path(path_type=str), help="Output folder (default RUN_DIR/eval or ./eval).")
@click.option("--log-mlflow", is_flag=True, help="Log eval/* metrics and the files to the run (or a linked run).")
@click.option("--tracking-uri", help="Tracking store (default: the run's own, else $MLFLOW_TRACKING_URI).")
@click.option("--top-k-grid", "grid", default=16, show_default=True, help="Misclassified examples to show.")
@click.option("--save-predictions", is_flag=True, help="Also write predictions.csv (one row per image).")
@friendly
def evaluate(
    run_dir: str | None,
    checkpoint: str | None,
    run_id: str | None,
    model_uri: str | None,
    data: str,
    batch_size: int,
    out: str | None,
    log_mlflow: bool,
    tracking_uri: str | None,
    grid: int,
    save_predictions: bool,
) -> None:
    """Evaluate a trained model: classification report, plots, report.html, optionally logged to MLflow."""
    from pathlib import Path

    from clfops.evaluate import EvalRequest, print_summary
    from clfops.evaluate import evaluate as run_evaluate

    request = EvalRequest(
        run_dir=Path(run_dir) if run_dir else None,
        checkpoint=Path(checkpoint) if checkpoint else None,
        run_id=run_id,
        model_uri=model_uri,
        data=data,
        batch_size=batch_size,
        out=Path(out) if out else None,
        log_mlflow=log_mlflow,
        tracking_uri=tracking_uri,
        grid=grid,
        save_predictions=save_predictions,
    )
    print_summary(run_evaluate(request))


@main.command()
@click.option(
    "--backend-store-uri",
    default="sqlite:///mlflow.db",
    show_default=True,
    help="sqlite:///FILE, postgresql://USER:PW@HOST:PORT/DB or mysql://USER:PW@HOST:PORT/DB.",
)
@click.option(
    "--artifacts-destination",
    default="./mlartifacts",
    show_default=True,
    help="Folder or s3://BUCKET/PREFIX (MLFLOW_S3_ENDPOINT_URL + AWS_* for MinIO/SeaweedFS).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address; beyond loopback needs --auth.")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64), help="Server processes.")
@click.option("--auth", is_flag=True, help="MLflow basic auth; admin password from $CLFOPS_ADMIN_PASSWORD.")
@click.option("--admin-username", default="admin", show_default=True)
@click.option("--admin-password-file", default=None, help="File holding the admin password (instead of the env var).")
@click.option("--auth-db-uri", default=None, help="Users/permissions store (default: the backend's database).")
@click.option(
    "--default-permission",
    default="READ",
    show_default=True,
    type=click.Choice(["READ", "EDIT", "MANAGE", "NO_PERMISSIONS"]),
)
@click.option("--allowed-hosts", default=None, help="Host headers to accept, e.g. mlflow.example.com.")
@click.option("--insecure", is_flag=True, help="Allow a non-loopback --host without --auth (a proxy authenticates).")
@friendly
def server(
    backend_store_uri: str,
    artifacts_destination: str,
    host: str,
    port: int,
    workers: int,
    auth: bool,
    admin_username: str,
    admin_password_file: str | None,
    auth_db_uri: str | None,
    default_permission: str,
    allowed_hosts: str | None,
    insecure: bool,
) -> None:
    """Start a team MLflow tracking server (checked first); Ctrl-C stops it and all its workers."""
    from clfops.server import ServerError, ServerSettings, serve

    settings = ServerSettings(
        backend_store_uri=backend_store_uri,
        artifacts_destination=artifacts_destination,
        host=host,
        port=port,
        workers=workers,
        auth=auth,
        insecure=insecure,
        admin_username=admin_username,
        admin_password_file=admin_password_file,
        auth_db_uri=auth_db_uri,
        default_permission=default_permission,
        allowed_hosts=allowed_hosts,
    )
    try:
        code = serve(settings)
    except ServerError as err:  # answered here: @friendly's error lookup imports torch (seconds)
        click.echo(f"clfops: error: {err}", err=True)
        sys.exit(EXIT_USAGE)
    sys.exit(code)


_STORE_HELP = "Tracking store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)."


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--model-uri", help="models:/NAME@production, models:/NAME/VERSION or runs:/RUN_ID/model.")
@click.option("--run-id", help="An MLflow run id (its logged model, else its local run dir).")
@click.option("--checkpoint", help="A checkpoint inside a run dir (RUN_DIR/checkpoints/*.ckpt).")
@click.option("--run-dir", help="A run directory (uses RUN_DIR/model).")
@click.option("--top-k", default=3, show_default=True, type=click.IntRange(1, 1000))
@click.option("--out", help="Also write every prediction to a .csv or .json file.")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--tracking-uri", help=_STORE_HELP)
@friendly
def predict(
    sources: tuple[str, ...],
    model_uri: str | None,
    run_id: str | None,
    checkpoint: str | None,
    run_dir: str | None,
    top_k: int,
    out: str | None,
    batch_size: int,
    tracking_uri: str | None,
) -> None:
    """Class names and probabilities for SOURCES: image files, folders (recursive) or IDX files (.gz or raw).

    Exits 1 when an image could not be read (each one is named on stderr and skipped).
    """
    from pathlib import Path

    from clfops import predict as P

    if out:
        P.check_out_path(Path(out))
    net, manifest = P.load_for_predict(model_uri, run_id, checkpoint, run_dir, tracking_uri)
    pred = P.predict_sources(net, manifest, list(sources), batch_size)
    P.print_table(pred, top_k)
    if out:
        P.write_output(pred, Path(out), top_k)
        click.echo(f"wrote {len(pred.names)} predictions to {out}")
    for path, why in pred.failed:
        click.echo(f"clfops: skipped unreadable {path}: {why}", err=True)
    if pred.failed:
        sys.exit(1)


@main.command()
@click.option("--run-id", required=True, help="The MLflow run whose logged model becomes a version.")
@click.option("--name", required=True, help="Registered model name (created when missing).")
@click.option("--tracking-uri", help=_STORE_HELP)
@friendly
def register(run_id: str, name: str, tracking_uri: str | None) -> None:
    """Register a run's model as a new version of NAME (tags: test_acc, data_sha256, git_commit)."""
    from clfops.promote import register as register_version

    mv = register_version(tracking_uri, run_id, name)
    click.echo(f"registered {name} version {mv.version} from run {run_id}: models:/{name}/{mv.version}")


@main.command()
@click.option("--name", required=True, help="Registered model name.")
@click.option("--version", "version", help="The version to promote (or --run-id).")
@click.option("--run-id", help="Promote the latest version registered from this run.")
@click.option("--alias", required=True, type=click.Choice(["staging", "production"]))
@click.option("--gate", "gates", multiple=True, help="METRIC(>=|<=|>|<|==)NUMBER, e.g. 'eval/accuracy>=0.90'.")
@click.option("--force", is_flag=True, help="Promote to production without holding staging first.")
@click.option("--compare-to", type=click.Choice(["staging", "production"]), help="Also beat this alias' version.")
@click.option("--tracking-uri", help=_STORE_HELP)
@friendly
def promote(
    name: str,
    version: str | None,
    run_id: str | None,
    alias: str,
    gates: tuple[str, ...],
    force: bool,
    compare_to: str | None,
    tracking_uri: str | None,
) -> None:
    """Move ALIAS to a version if every gate holds; exit 0 promoted, 1 a gate failed, 2 usage error.

    Gates read the version's run metrics; eval/* falls back to the test/* metric training logged
    (eval/accuracy <- test/acc) until `clfops evaluate --run-id ID --log-mlflow` has run.
    """
    from clfops.promote import promote as promote_version

    decision = promote_version(tracking_uri, name, alias, version, run_id, list(gates), force, compare_to)
    for ok, text in decision.checks:
        click.echo(f"  {'pass' if ok else 'FAIL'}  {text}")
    if not decision.promoted:
        click.echo(f"not promoted: {name} v{decision.version} -> @{alias} refused ({decision.reason})", err=True)
        sys.exit(1)
    was = f" (was v{decision.previous})" if decision.previous else ""
    click.echo(f"promoted {name} v{decision.version} -> @{alias}{was}: models:/{name}@{alias}")


@main.command()
@click.argument("name")
@click.option("--tracking-uri", help=_STORE_HELP)
@friendly
def models(name: str, tracking_uri: str | None) -> None:
    """List the versions of registered model NAME: aliases, run, key metrics, promotion decisions."""
    from rich.console import Console
    from rich.table import Table

    from clfops.promote import model_rows

    rows = model_rows(tracking_uri, name)
    caption = "(test): the test/* metric of training; `clfops evaluate --run-id ID --log-mlflow` logs eval/*"
    table = Table(*rows[0].keys(), title=f"registered model {name}", caption=caption)
    for row in rows:
        table.add_row(*row.values())
    Console(width=None if sys.stdout.isatty() else 120).print(table)  # CI logs: no truncated cells


@main.command("runs")
@click.option("--root", default="runs", show_default=True, help="Where the run dirs are (run.root).")
@friendly
def list_runs(root: str) -> None:
    """List local run dirs: status, epochs done, best val/acc; what `resume=` can continue."""
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from clfops.runs import list_runs as find_runs

    table = Table("run", "status", "epochs", "best val/acc", "test/acc", "resume with")
    for run in find_runs(Path(root)):
        best = f"{run['best_val_acc']:.4f}" if run["best_val_acc"] is not None else "-"
        test = f"{run['test_acc']:.4f}" if run["test_acc"] is not None else "-"
        hint = f"clfops train resume={run['path']}" if run["resumable"] else ""
        table.add_row(run["name"], run["status"], str(run["epochs"]), best, test, hint)
    Console().print(table)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=str))
@click.option("--uri", default=None, help="Tracking store (default: the run's own, from run.json).")
@friendly
def sync(run_dir: str, uri: str | None) -> None:
    """Upload RUN_DIR to MLflow: metrics it lacks, files, final status (after a lost server)."""
    from pathlib import Path

    from clfops.sync import sync as run_sync

    result = run_sync(Path(run_dir), uri)
    what = "new run" if result.created else "run"
    click.echo(f"synced {run_dir} -> {what} {result.run_id}: {result.points_sent} metric points, {result.status}")


# ---- tuning and studies (issue 9): lr-find, batch-size-find, compare, sweep ----


@main.command("lr-find")
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@click.option("--min-lr", default=1e-6, show_default=True, type=float, help="Lowest LR tested.")
@click.option("--max-lr", default=1.0, show_default=True, type=float, help="Highest LR tested.")
@click.option("--steps", default=100, show_default=True, type=click.IntRange(13), help="Training steps = LRs tested.")
@click.option("--out", default="tuning", show_default=True, help="Folder for lr_find.png and lr_find.json.")
@click.option("--log-mlflow", is_flag=True, help="Also record the test as an MLflow run named lr-find.")
@friendly
def lr_find(overrides: tuple[str, ...], min_lr: float, max_lr: float, steps: int, out: str, log_mlflow: bool) -> None:
    """LR range test on the recipe (same OVERRIDES as train): loss-vs-LR plot and a suggested optimizer.lr."""
    import tempfile
    from pathlib import Path

    from clfops.config import compose
    from clfops.tune import TuningError, log_lr_find, write_lr_find
    from clfops.tune import lr_find as run_lr_find

    cfg = compose("train", list(overrides))
    with tempfile.TemporaryDirectory(prefix="clfops-lr-find-") as tmp:
        result = run_lr_find(cfg, min_lr, max_lr, steps, Path(tmp))
    files = write_lr_find(result, cfg, Path(out))
    click.echo(f"wrote {', '.join(str(f) for f in files)}")
    if log_mlflow:
        click.echo(f"MLflow run {log_lr_find(cfg, result, files)}")
    if result.suggestion is None:
        raise TuningError(f"no suggestion: the loss diverged after {len(result.losses)} steps; lower --max-lr")
    stop = f"; the loss diverged at lr {result.lrs[-1]:.2g}" if result.diverged else ""
    click.echo(
        f"suggested optimizer.lr={result.suggestion:.3g}  (steepest loss descent, {len(result.lrs)} steps{stop})"
    )


@main.command("batch-size-find")
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@click.option("--sizes", default="32,64,128,256,512,1024", show_default=True, help="Batch sizes to time.")
@click.option("--steps", default=5, show_default=True, type=click.IntRange(1), help="Timed steps per size.")
@click.option("--warmup", default=2, show_default=True, type=click.IntRange(0), help="Untimed steps first.")
@click.option("--out", default="tuning", show_default=True, help="Folder for batch_size.json.")
@friendly
def batch_size_find(overrides: tuple[str, ...], sizes: str, steps: int, warmup: int, out: str) -> None:
    """Training img/s per batch size on this machine; the largest that fits and the one to use."""
    from pathlib import Path

    from clfops.config import compose
    from clfops.tune import TuningError, batch_size_find, pick_batch_size, print_batch_sizes, write_batch_size

    try:
        size_list = [int(v) for v in sizes.split(",") if v.strip()]
    except ValueError:
        raise TuningError(f"--sizes {sizes!r}: give comma-separated integers, e.g. 64,128,256") from None
    cfg = compose("train", list(overrides))
    rows = batch_size_find(cfg, size_list, warmup, steps)
    choice = pick_batch_size(rows)
    print_batch_sizes(rows, choice)
    click.echo(f"wrote {write_batch_size(rows, choice, cfg, Path(out))}")


@main.command()
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--group", help="Study name: the parent run's name and the folder studies/NAME.")
@click.option("--vary", help="KEY=V1,V2,...: the one override that changes, e.g. scheduler=step,cosine.")
@click.option("--runs", "from_runs", is_flag=True, help="ARGS are MLflow run ids (a study's parent = its runs).")
@click.option("--out", help="Output folder (default studies/NAME, or studies/runs-<time> with --runs).")
@click.option("--tracking-uri", help=_STORE_HELP)
@click.option("--verbose", is_flag=True, help="Show the training log of every run.")
@friendly
def compare(
    args: tuple[str, ...],
    group: str | None,
    vary: str | None,
    from_runs: bool,
    out: str | None,
    tracking_uri: str | None,
    verbose: bool,
) -> None:
    """Run a study (ARGS = the recipe's overrides) or compare existing runs (--runs ID ID...): table + plots.

    \b
    clfops compare --group sched --vary scheduler=step,multistep,exponential,cosine,onecycle,plateau
    clfops compare --group aug --vary augment=none,basic,strong trainer.max_epochs=10
    clfops compare --runs RUN_ID RUN_ID ...
    """
    import time
    from pathlib import Path

    if from_runs and (group or vary):  # checked before the imports below (Lightning, MLflow: seconds)
        raise UserError("compare: --runs builds a table of existing runs; leave out --group and --vary")
    if not from_runs and (not group or not vary):
        raise UserError("compare: give --group NAME and --vary KEY=V1,V2,... (or --runs ID ID...)")
    from clfops.compare import compare_runs, print_table, run_study

    if from_runs:
        folder = Path(out) if out else Path("studies") / f"runs-{time.strftime('%Y%m%d-%H%M%S')}"
        curves = compare_runs(tracking_uri, list(args), folder)
    else:
        assert group is not None and vary is not None
        overrides = list(args) + ([f"tracking.uri={tracking_uri}"] if tracking_uri else [])
        folder = Path(out) if out else Path("studies") / group
        curves = run_study(overrides, group, vary, folder, verbose)
    print_table(curves)
    click.echo(f"wrote {folder}/comparison.csv, comparison.md, comparison.png")


@main.command()
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@click.option("--trials", required=True, type=click.IntRange(1), help="Finished trials the study should hold.")
@click.option("--space", required=True, type=click.Path(dir_okay=False), help="Search space YAML (docs/tuning.md).")
@click.option("--study-name", help="Re-attach to this study (resume), or name a new one.")
@click.option("--storage", help="sqlite:///FILE or postgresql://USER:PW@HOST:PORT/DB (default optuna.db by mlflow.db).")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1, 64), help="Parallel worker processes.")
@click.option("--out", help="Output folder (default studies/STUDY_NAME).")
@click.option("--prune-startup", default=5, show_default=True, type=click.IntRange(0), help="Trials before pruning.")
@click.option("--prune-warmup", default=1, show_default=True, type=click.IntRange(0), help="Epochs before pruning.")
@click.option("--verbose", is_flag=True, help="Show the training log and Optuna's messages.")
@friendly
def sweep(
    overrides: tuple[str, ...],
    trials: int,
    space: str,
    study_name: str | None,
    storage: str | None,
    jobs: int,
    out: str | None,
    prune_startup: int,
    prune_warmup: int,
    verbose: bool,
) -> None:
    """Optuna search (TPE, median pruning on val/acc) over --space; the best recipe as an override file."""
    from pathlib import Path

    from clfops.sweep import SweepSettings, run_sweep

    settings = SweepSettings(
        trials=trials,
        space_file=Path(space),
        overrides=list(overrides),
        study_name=study_name,
        storage=storage,
        jobs=jobs,
        out=Path(out) if out else None,
        prune_startup=prune_startup,
        prune_warmup=prune_warmup,
        verbose=verbose,
    )
    result = run_sweep(settings)
    if result.best_trial is None:
        click.echo(f"study {result.study_name}: no trial completed yet ({result.finished} finished)")
    else:
        click.echo(f"best: trial {result.best_trial}, val/acc {result.best_value:.4f}")
        click.echo(f"run it: {result.command}")
    click.echo(f"wrote {', '.join(str(f) for f in result.files)}")


if __name__ == "__main__":
    main()
