"""The tracking store and one MLflow run: store setup under a lock, runs, params, tags, metrics, artifacts.

MLflow is the source of truth for runs; the run directory is the local copy that survives a lost server.
Metric points go through `log_batch(synchronous=False)` (MLflow's async queue) and are flushed before the
run ends, so logging costs the training loop almost nothing. A server that stops answering mid-run turns
the tracker offline with one warning: training goes on and `clfops sync RUN_DIR` uploads it later.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clfops.errors import UserError
from clfops.tracking.redact import install_log_filter, is_redacted, redact_text, redact_uri, split_userinfo

log = logging.getLogger("clfops")
install_log_filter(log)  # every message logged on "clfops" (console and train.log) is redacted once

DEFAULT_URI = "sqlite:///mlflow.db"
STATUSES = ("FINISHED", "FAILED", "KILLED")


class TrackingError(UserError):
    """Tracking cannot start (server unreachable, bad URI, unknown run): one line for the user."""


def resolve_uri(uri: str | None) -> str:
    """The URI to connect with: `uri`, else $MLFLOW_TRACKING_URI, else ./mlflow.db. A recorded URI whose
    password clfops hid (run.json, config.yaml: USER:***@HOST) gets its credentials back from the
    environment only; http(s) credentials move out of the URL into MLflow's basic-auth variables."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    uri = uri or env or DEFAULT_URI
    if is_redacted(uri):
        uri = _credentials_from_env(uri, env)
    if uri.startswith(("http://", "https://")):
        bare, user, password = split_userinfo(uri)
        if password is not None:  # MLflow sends these as basic auth; the URL itself never holds them
            os.environ["MLFLOW_TRACKING_USERNAME"] = user or ""
            os.environ["MLFLOW_TRACKING_PASSWORD"] = password
            uri = bare
    return uri


def same_store(a: str | None, b: str | None) -> bool:
    """Whether two URIs (either possibly recorded with its password hidden) name the same store."""

    def shown(uri: str | None) -> str:
        uri = redact_uri(uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI)
        return split_userinfo(uri)[0] if uri.startswith(("http://", "https://")) else uri

    return shown(a) == shown(b)


def _credentials_from_env(recorded: str, env: str | None) -> str:
    if env and redact_uri(env) == recorded:
        return env
    bare, user, _ = split_userinfo(recorded)
    http = recorded.startswith(("http://", "https://"))
    if (
        http
        and user
        and os.environ.get("MLFLOW_TRACKING_PASSWORD")
        and os.environ.get("MLFLOW_TRACKING_USERNAME", user) == user
    ):
        os.environ["MLFLOW_TRACKING_USERNAME"] = user
        return bare
    raise TrackingError(
        f"the tracking URI {recorded} was recorded without its password: give tracking.uri=... (or --tracking-uri) "
        "again with it, or set MLFLOW_TRACKING_URI (MLFLOW_TRACKING_USERNAME/PASSWORD for http)"
    )


def _auth_header() -> dict[str, str]:
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if not user or password is None:
        return {}
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def _check_reachable(uri: str, timeout_s: float) -> None:
    """Fail in seconds, not minutes: MLflow's own client retries an unreachable server for a long time.
    Credentials go as a basic-auth header, as MLflow sends them (in the URL urllib reads them as the host)."""
    if not uri.startswith(("http://", "https://")):
        return
    shown = redact_uri(uri)
    try:
        request = urllib.request.Request(split_userinfo(uri)[0].rstrip("/") + "/health", headers=_auth_header())
        with urllib.request.urlopen(request, timeout=timeout_s):
            return
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            return  # reachable; authentication is checked by the first real call
        raise TrackingError(f"tracking server {shown} answered HTTP {err.code} on /health") from None
    except (OSError, ValueError) as err:
        reason = redact_text(str(getattr(err, "reason", err)))
        raise TrackingError(
            f"tracking server {shown} is unreachable ({reason}): start it (clfops server) or set "
            "tracking.uri / MLFLOW_TRACKING_URI, or tracking.enabled=false"
        ) from None


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialise the first use of a SQLite store: concurrent first migrations corrupt it."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def client(uri: str | None = None, timeout_s: float = 10.0, create: bool = True):  # -> MlflowClient
    """An MlflowClient on `uri` (checked reachable); the SQLite schema is created once, under a lock.

    create=False (commands that only read: evaluate, predict, models, compare, resume=ID): a SQLite file
    that does not exist is a TrackingError, not a new empty store left in the working directory."""
    uri = resolve_uri(uri)
    _check_reachable(uri, timeout_s)
    if not create and uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise TrackingError(f"no such store {uri}: point --tracking-uri / MLFLOW_TRACKING_URI at the store to read")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    from mlflow.tracking import MlflowClient

    with _store_lock(uri):
        from clfops.tracking.sqlite_template import remove_failed_store, seed_sqlite_store

        new_db = seed_sqlite_store(uri)  # a new SQLite store: a copy of a migrated template, not ~3 s of migrations
        try:
            c = MlflowClient(tracking_uri=uri)
            c.search_experiments(max_results=1)  # forces store creation + migration while we hold the lock
        except BaseException:
            remove_failed_store(new_db)  # a store this call began (e.g. on a full disk) is not left half-made
            raise
    return c


# MLflow's UI (3.x) reads this experiment tag to pick its layout: without it an experiment holding no runs yet
# is taken for GenAI and opens on the traces overview instead of the training runs table.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def with_user(tags: dict[str, str]) -> dict[str, str]:
    """`tags` plus MLflow's `mlflow.user` (the UI's "User" column): MlflowClient.create_run, unlike the fluent
    API, does not set it. The caller's own `mlflow.user` wins."""
    import getpass

    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no $USER/$LOGNAME and no passwd entry (some containers)
        return dict(tags)
    return {"mlflow.user": user, **tags}


def experiment_id(c: Any, name: str, uri: str) -> str:
    with _store_lock(uri):
        exp = c.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        from mlflow.exceptions import MlflowException

        try:
            return c.create_experiment(name, tags=EXPERIMENT_KIND)
        except MlflowException:  # created by a concurrent process in between
            return c.get_experiment_by_name(name).experiment_id


class Tracker:
    """One MLflow run. `offline` becomes True when the server stops answering; nothing raises then."""

    def __init__(self, mlflow_client: Any, run_id: str, uri: str) -> None:
        self.client, self.run_id, self.uri = mlflow_client, run_id, uri
        self.offline = False
        self.run_dir: Path | None = None  # named in the offline warning
        self.points_logged = 0
        self._pending: list[Any] = []  # RunOperations of async log_batch calls, waited on in flush()

    @classmethod
    def start(cls, uri: str | None, experiment: str, run_name: str, tags: dict[str, str], timeout_s: float) -> Tracker:
        uri = resolve_uri(uri)
        try:
            c = client(uri, timeout_s)
            exp_id = experiment_id(c, experiment, uri)
            clean = {k: redact_text(str(v)) for k, v in with_user(tags).items()}  # clfops.command: overrides
            run = c.create_run(exp_id, run_name=run_name, tags=clean)
        except TrackingError:
            raise
        except Exception as err:
            raise TrackingError(f"cannot start an MLflow run on {redact_uri(uri)}: {first_line(err)}") from None
        return cls(c, run.info.run_id, uri)

    @classmethod
    def reopen(cls, uri: str | None, run_id: str, timeout_s: float) -> Tracker:
        """Continue an existing run (resume): its status goes back to RUNNING."""
        uri = resolve_uri(uri)
        c = client(uri, timeout_s)
        try:
            c.get_run(run_id)
            c.update_run(run_id, status="RUNNING")
        except Exception as err:
            raise TrackingError(f"cannot reopen MLflow run {run_id} on {redact_uri(uri)}: {first_line(err)}") from None
        return cls(c, run_id, uri)

    def _guard(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self.offline:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            self._go_offline(f"{what} failed: {first_line(err)}")
            return None

    def _go_offline(self, reason: str) -> None:
        self.offline = True
        self._pending.clear()
        # MLflow's async queue keeps retrying what it holds and logs each failure: one warning from us is enough.
        logging.getLogger("mlflow.utils.async_logging").setLevel(logging.CRITICAL)
        logging.getLogger("mlflow.utils.async_logging.async_logging_queue").setLevel(logging.CRITICAL)
        log.warning(
            f"tracking server {redact_uri(self.uri)} stopped answering ({reason}); training goes on and the run "
            f"dir keeps everything: run `clfops sync {self.run_dir or 'RUN_DIR'}` when the server is back"
        )

    def log_params(self, params: dict[str, Any]) -> None:
        """Values redacted here (tracking.uri, data roots with keys): no caller can leak a credential."""
        from mlflow.entities import Param

        items = [Param(k, _param_value(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
            self._guard("log_params", self.client.log_batch, self.run_id, params=items[i : i + 100])

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, redact_text(str(v))[:5000]) for k, v in tags.items()]  # clfops.command, error
        self._guard("set_tags", self.client.log_batch, self.run_id, tags=items)

    def log_inputs(self, datasets: list[Any]) -> None:
        """mlflow.entities.DatasetInput records (tracking/datasets.py builds them). A failure here (a SQLite store
        locked by concurrent runs, say) warns and leaves the tracker online: the dataset record is provenance,
        and metrics and the final status must still reach the store."""
        if self.offline:
            return
        try:
            self.client.log_inputs(self.run_id, datasets=datasets)
        except Exception as err:
            log.warning(f"the data set was not recorded as an MLflow input: {first_line(err)}")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if items:
            ops = self._guard("log_metrics", self.client.log_batch, self.run_id, metrics=items, synchronous=False)
            if ops is not None:
                self._pending.append(ops)
                self.points_logged += len(items)

    def flush(self) -> None:
        """Wait until queued points are stored. A server that does not answer /health within 5 s is not
        waited on (its queued calls would each retry for minutes): the tracker goes offline instead."""
        if self.offline or not self._pending:
            return
        if self.uri.startswith(("http://", "https://")):
            try:
                _check_reachable(self.uri, timeout_s=5.0)
            except TrackingError:
                self._go_offline("no answer to /health")
                return
        pending, self._pending = self._pending, []
        for ops in pending:
            self._guard("log_metrics", ops.wait)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if path.exists():
            self._guard("log_artifact", self.client.log_artifact, self.run_id, str(path), artifact_path)

    def log_artifacts(self, directory: Path, artifact_path: str | None = None) -> None:
        if directory.exists():
            self._guard("log_artifacts", self.client.log_artifacts, self.run_id, str(directory), artifact_path)

    def end(self, status: str, error: str | None = None) -> None:
        """Flush queued points, record why it failed, set the terminal status."""
        assert status in STATUSES, status
        self.flush()
        if error:
            self.set_tags({"error": error})
        self._guard("set_terminated", self.client.set_terminated, self.run_id, status)

    def last_steps(self) -> dict[str, int]:
        """The highest step already stored per metric: a resumed run does not send those points again."""
        run = self._guard("get_run", self.client.get_run, self.run_id)
        if run is None:
            return {}
        steps = {}
        for key in run.data.metrics:
            history = self._guard("get_metric_history", self.client.get_metric_history, self.run_id, key) or []
            steps[key] = max((m.step for m in history), default=-1)
        return steps

    def artifact_uri(self) -> str | None:
        run = self._guard("get_run", self.client.get_run, self.run_id)
        return run.info.artifact_uri if run else None


def run_dir_lookup(uri: str | None, timeout_s: float = 10.0) -> Any:
    """A function run_id -> the local run dir recorded in the run's `clfops.run_dir` tag (for resume=ID)."""

    def lookup(run_id: str) -> str:
        try:
            run = client(uri, timeout_s, create=False).get_run(run_id)
        except TrackingError:
            raise
        except Exception as err:
            where = redact_uri(resolve_uri(uri))
            raise TrackingError(f"unknown MLflow run {run_id} on {where}: {first_line(err)}") from None
        path = run.data.tags.get("clfops.run_dir")
        if not path:
            raise TrackingError(f"MLflow run {run_id} has no clfops.run_dir tag: resume from its run dir instead")
        return path

    return lookup


def _param_value(value: Any) -> str:
    text = "null" if value is None else redact_text(str(value))
    return text if len(text) <= 6000 else text[:5997] + "..."


def first_line(err: BaseException) -> str:
    """The error's first line, whole (MLflow puts its fix at the end of a long line), redacted."""
    text = str(err).strip() or type(err).__name__
    return redact_text(text.splitlines()[0])
