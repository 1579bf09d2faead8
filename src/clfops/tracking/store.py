"""The tracking store: its URI (credentials from the environment only), a reachability check that fails in
seconds, an MlflowClient with the SQLite schema created once under a lock, experiments, and TrackingError.

MLflow is the source of truth for runs; the run directory is the local copy that survives a lost server.
One MLflow run, as training logs to it, is tracker.py's `Tracker`.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import os
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


def check_reachable(uri: str, timeout_s: float) -> None:
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
    check_reachable(uri, timeout_s)
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


def first_line(err: BaseException) -> str:
    """The error's first line, whole (MLflow puts its fix at the end of a long line), redacted."""
    text = str(err).strip() or type(err).__name__
    return redact_text(text.splitlines()[0])
