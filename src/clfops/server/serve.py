"""`clfops server`: a team MLflow tracking server in one command, checked before it starts.

Checks first, each failing in seconds with one line: the bind address (no unauthenticated server beyond
loopback), the admin password for `--auth`, the database driver, the database itself (TCP, then a real
login), and the artifact destination (S3: credentials, endpoint, bucket); server_checks.py holds all of them
but the password's. Then `mlflow server` runs with artifact proxying, in its own process group: Ctrl-C or
SIGTERM stops it and every worker it forked.
Nothing heavy is imported at module level: `clfops --help` stays fast.
"""

from __future__ import annotations

import importlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clfops.server.checks import (
    INSTALL_HINT,
    ServerError,
    check_artifacts,
    check_bind,
    check_database,
    check_driver,
    check_port,
    normalize_store_uri,
)
from clfops.tracking.redact import redact_uri

log = logging.getLogger("clfops")

PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")
_MIN_PASSWORD = 12  # MLflow's basic-auth password policy; checked here so the message names our option


@dataclass(frozen=True)
class ServerSettings:
    backend_store_uri: str = "sqlite:///mlflow.db"
    artifacts_destination: str = "./mlartifacts"
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 2
    auth: bool = False
    insecure: bool = False
    admin_username: str = "admin"
    admin_password_file: str | None = None
    auth_db_uri: str | None = None  # None: the backend's database (PostgreSQL/MySQL) or a sibling SQLite file
    default_permission: str = "READ"
    allowed_hosts: str | None = None
    check_timeout_s: float = 5.0


def admin_password(password_file: str | None) -> str:
    """From --admin-password-file, else $CLFOPS_ADMIN_PASSWORD; there is never a default."""
    if password_file:
        try:
            password = Path(password_file).read_text(encoding="utf-8").strip("\r\n")
        except OSError as err:
            raise ServerError(f"cannot read --admin-password-file {password_file}: {err.strerror}") from None
    else:
        password = os.environ.get("CLFOPS_ADMIN_PASSWORD", "")
    if not password:
        raise ServerError("--auth needs an admin password: set CLFOPS_ADMIN_PASSWORD or --admin-password-file FILE")
    if len(password) < _MIN_PASSWORD:
        raise ServerError(f"the admin password must have at least {_MIN_PASSWORD} characters")
    return password


def auth_db_uri(settings: ServerSettings, store: str) -> str:
    """Users and permissions: the backend's own database (every server behind a proxy sees the same users;
    MLflow keeps them in separate tables with their own migration history), or SQLite beside mlflow.db."""
    if settings.auth_db_uri:
        return normalize_store_uri(settings.auth_db_uri)
    if not store.startswith("sqlite:"):
        return store
    db = Path(store.split(":///", 1)[1]).expanduser().resolve()
    return f"sqlite:///{db.with_name(db.stem + '-auth.db')}"


def auth_environment(settings: ServerSettings, store: str, workdir: Path) -> dict[str, str]:
    """Writes the basic-auth ini (0600, no password in it) and returns the env the server needs."""
    password = admin_password(settings.admin_password_file)
    ini = workdir / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\n"
        f"default_permission = {settings.default_permission}\n"
        f"database_uri = {auth_db_uri(settings, store).replace('%', '%%')}\n"
        f"admin_username = {settings.admin_username}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # Each request re-hashes the password (scrypt, ~0.1 s CPU): a training run makes hundreds. A
        # checked login is trusted for 30 s per worker (a password change reaches other workers by then).
        "auth_cache_ttl_seconds = 30\n",
        encoding="utf-8",
    )
    ini.chmod(0o600)
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        # The password reaches MLflow by the environment of its process only, never a file on disk.
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,
        "MLFLOW_AUTH_ADMIN_USERNAME": settings.admin_username,
        # CSRF key: shared by this server's workers; several servers behind a proxy need the same one.
        "MLFLOW_FLASK_SERVER_SECRET_KEY": os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY") or secrets.token_hex(32),
    }


def tracking_url(host: str, port: int) -> str:
    """The URL users put in tracking.uri (a wildcard bind is reached by this machine's name)."""
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn()
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def mlflow_command(settings: ServerSettings, store: str, dest: str) -> list[str]:
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store]
    cmd += ["--serve-artifacts", "--artifacts-destination", dest]
    cmd += ["--host", settings.host, "--port", str(settings.port), "--workers", str(settings.workers)]
    if settings.auth:
        cmd += ["--app-name", "basic-auth"]
    if settings.allowed_hosts:
        cmd += ["--allowed-hosts", settings.allowed_hosts]
    return cmd


def serve(settings: ServerSettings) -> int:
    """Check everything, run `mlflow server` until it exits or we are told to stop; returns its exit code."""
    check_bind(settings.host, settings.auth, settings.insecure)
    check_port(settings.host, settings.port)
    if settings.auth:
        admin_password(settings.admin_password_file)  # fail before touching the database
        try:
            importlib.import_module("flask_wtf")  # MLflow's basic-auth app needs it for CSRF
        except ImportError:
            raise ServerError(f"--auth needs Flask-WTF, which is not installed: {INSTALL_HINT}") from None
    if settings.default_permission not in PERMISSIONS:
        raise ServerError(f"--default-permission must be one of {', '.join(PERMISSIONS)}")
    store = normalize_store_uri(settings.backend_store_uri)
    check_driver(store)
    check_database(store, settings.check_timeout_s)
    dest = check_artifacts(settings.artifacts_destination, settings.check_timeout_s)
    env = dict(os.environ)
    # MLflow's GenAI job runner forks ~7 huey consumers per server; classifier tracking never uses them.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    url = tracking_url(settings.host, settings.port)
    with tempfile.TemporaryDirectory(prefix="clfops-server-") as tmp:
        if settings.auth:
            env.update(auth_environment(settings, store, Path(tmp)))
        log.info(f"MLflow server: store {redact_uri(store)}, artifacts {dest}, {settings.workers} workers")
        log.info(f"tracking.uri={url}   (or export MLFLOW_TRACKING_URI={url})  Ctrl-C stops it")
        # Own session + process group: one signal reaches the uvicorn supervisor and all its workers.
        proc = subprocess.Popen(mlflow_command(settings, store, dest), env=env, start_new_session=True)
        return _supervise(proc, _probe_url(settings.host, settings.port), url)


def _supervise(proc: subprocess.Popen[Any], probe: str, url: str) -> int:
    stop: list[int] = []
    old = {s: signal.signal(s, lambda signum, frame: stop.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    ready = False
    try:
        while not stop and proc.poll() is None:
            if not ready and _healthy(probe):
                ready = True
                log.info(f"ready: {url}")
            time.sleep(0.2)
        if stop:
            log.info(f"stopping the MLflow server ({signal.Signals(stop[0]).name})")
            return 0
        log.warning(f"the MLflow server exited with code {proc.returncode} (its messages are above)")
        return 128 - proc.returncode if proc.returncode < 0 else proc.returncode  # killed by a signal: 128+N
    finally:
        stop_group(proc, grace_s=10.0)
        for sig, handler in old.items():
            signal.signal(sig, handler)


def stop_group(proc: subprocess.Popen[Any], grace_s: float) -> None:
    """SIGTERM the server's process group, SIGKILL what is left after grace_s; reap our child."""
    pgid = proc.pid  # start_new_session made it the group leader
    deadline = time.monotonic() + grace_s
    sig = signal.SIGTERM
    while True:
        proc.poll()  # reap the leader, or its zombie keeps the group alive
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        if sig == signal.SIGKILL and time.monotonic() > deadline + 5:
            break  # only zombies owned by someone else can be left
        sig = 0 if time.monotonic() < deadline else signal.SIGKILL
        time.sleep(0.1)
    proc.wait()


def _probe_url(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return tracking_url(host, port) + "/health"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError as err:
        return err.code in (401, 403)
    except (OSError, ValueError):
        return False
