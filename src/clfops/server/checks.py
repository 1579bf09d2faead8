"""The pre-flight checks of `clfops server`: each fails in seconds with one line naming the fix.

The bind address (no unauthenticated server beyond loopback) and the port, the backend store URI (bare
postgresql:// and mysql:// get the drivers the `server` extra installs), the database driver, the database
itself (TCP, then a real login), and the artifact destination (S3: credentials, endpoint, bucket).
Nothing heavy is imported at module level: `clfops --help` stays fast.
"""

from __future__ import annotations

import importlib
import ipaddress
import logging
import os
import socket
from pathlib import Path
from typing import Any

from clfops.errors import UserError

log = logging.getLogger("clfops")

INSTALL_HINT = "pip install 'clfops[server]'"
# Bare schemes -> the SQLAlchemy dialect+driver the `server` extra installs. A bare postgresql:// means
# psycopg2 to SQLAlchemy (not installed); mariadb:// is not a dialect MLflow accepts.
_SCHEMES = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
}
# driver -> (module to import, what to install)
_DRIVERS = {
    "psycopg": ("psycopg", INSTALL_HINT),
    "pymysql": ("pymysql", INSTALL_HINT),
    "psycopg2": ("psycopg2", "pip install psycopg2-binary"),
    "pg8000": ("pg8000", "pip install pg8000"),
    "mysqldb": ("MySQLdb", "pip install mysqlclient"),
}
_DB_NAMES = {"postgresql": ("PostgreSQL", 5432), "mysql": ("MySQL/MariaDB", 3306)}


class ServerError(UserError):
    """The server cannot start as asked: one line naming what is wrong and what to do."""


def normalize_store_uri(uri: str) -> str:
    """postgresql:// -> postgresql+psycopg://, mysql:// -> mysql+pymysql://; other schemes are checked."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise ServerError(
            f"--backend-store-uri {uri!r} is not a URI: use sqlite:///FILE, postgresql://... or mysql://..."
        )
    dialect = scheme.split("+", 1)[0].lower()
    if dialect not in ("sqlite", "postgresql", "postgres", "mysql", "mariadb"):
        raise ServerError(
            f"--backend-store-uri scheme {scheme!r} is not supported: use sqlite:///FILE, "
            "postgresql://USER:PASSWORD@HOST:PORT/DB or mysql://USER:PASSWORD@HOST:PORT/DB"
        )
    if "+" in scheme:
        driver = scheme.split("+", 1)[1]
        return f"{_SCHEMES.get(dialect, dialect).split('+')[0]}+{driver}://{rest}"
    return f"{_SCHEMES.get(dialect, dialect)}://{rest}"


def check_driver(uri: str) -> None:
    scheme = uri.split("://", 1)[0]
    if "+" not in scheme:
        return  # sqlite: the standard library's
    driver = scheme.split("+", 1)[1].lower()
    module, hint = _DRIVERS.get(driver, (driver, f"pip install {driver}"))
    try:
        importlib.import_module(module)
    except ImportError:
        raise ServerError(f"the database driver {module!r} for {scheme}:// is not installed: {hint}") from None


def check_database(uri: str, timeout_s: float) -> None:
    """TCP first (names host:port within timeout_s), then a real login + SELECT 1 (names the server's reason)."""
    if uri.startswith("sqlite:"):
        path = uri.split(":///", 1)[1] if ":///" in uri else ""
        if path and path != ":memory:":
            Path(path).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    url = sqlalchemy.engine.make_url(uri)
    kind, default_port = _DB_NAMES[url.get_backend_name()]
    where = f"{url.host or 'localhost'}:{url.port or default_port}"
    if url.host:  # no host: a Unix socket, nothing to probe by TCP
        try:
            socket.create_connection((url.host, url.port or default_port), timeout=timeout_s).close()
        except OSError as err:
            raise ServerError(
                f"cannot reach the {kind} database at {where} ({err.strerror or err}): start it, "
                "or fix host/port in --backend-store-uri"
            ) from None
    # The drivers we know take connect_timeout; an unknown one gets its defaults.
    known = url.get_driver_name() in ("psycopg", "psycopg2", "pymysql", "mysqldb")
    connect_args = {"connect_timeout": max(1, int(timeout_s))} if known else {}
    engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=connect_args)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
    except sqlalchemy.exc.SQLAlchemyError as err:
        reason = _first_line(getattr(err, "orig", None) or err).split("FATAL:")[-1].strip()
        raise ServerError(
            f"cannot use database {url.database!r} on {kind} at {where} as user {url.username!r} ({reason}): "
            "check that the database exists and the user/password in --backend-store-uri"
        ) from None
    finally:
        engine.dispose()


def check_artifacts(dest: str, timeout_s: float) -> str:
    """A local folder is created (absolute path returned); s3:// is checked; other schemes pass as given."""
    if dest.startswith("s3://"):
        _check_s3(dest, timeout_s)
        return dest
    if "://" in dest and not dest.startswith("file://"):
        return dest  # gs://, wasbs://, hdfs://...: MLflow's own client reports problems there
    path = Path(dest.removeprefix("file://")).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def _check_s3(dest: str, timeout_s: float) -> None:
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise ServerError(f"s3:// artifacts need boto3, which is not installed: {INSTALL_HINT}") from None
    bucket = dest.removeprefix("s3://").split("/", 1)[0]
    session = boto3.Session()
    if session.get_credentials() is None:
        raise ServerError(
            f"no S3 credentials for {dest}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
        )
    endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None
    if endpoint is None and session.region_name is None:
        raise ServerError(
            f"no S3 endpoint for {dest}: set MLFLOW_S3_ENDPOINT_URL=http://HOST:PORT (MinIO, SeaweedFS) "
            "or AWS_DEFAULT_REGION (AWS S3)"
        )
    config = Config(connect_timeout=timeout_s, read_timeout=timeout_s, retries={"max_attempts": 1})
    where = endpoint or f"AWS S3 ({session.region_name})"
    try:
        session.client("s3", endpoint_url=endpoint, config=config).head_bucket(Bucket=bucket)
    except ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", "?"))
        if code in ("404", "NoSuchBucket"):
            raise ServerError(f"S3 bucket {bucket!r} does not exist at {where}: create it first") from None
        raise ServerError(f"S3 at {where} refused bucket {bucket!r} (HTTP {code}): check the credentials") from None
    except BotoCoreError as err:
        raise ServerError(f"cannot reach S3 at {where} ({_first_line(err)}): check MLFLOW_S3_ENDPOINT_URL") from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: loopback only if every address it resolves to is
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError:
            return False
        return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def check_bind(host: str, auth: bool, insecure: bool) -> None:
    if is_loopback(host) or auth:
        return
    if not insecure:
        raise ServerError(
            f"--host {host} exposes the server beyond this machine without authentication: add --auth "
            "(admin password from CLFOPS_ADMIN_PASSWORD), or --insecure if a proxy in front authenticates"
        )
    log.warning(f"WARNING: --insecure: anyone who can reach {host} can read, change and delete every run")


def check_port(host: str, port: int) -> None:
    """Found here, the MLflow server would otherwise die after seconds of start-up with a uvicorn traceback."""
    bind_host = "" if host in ("0.0.0.0", "::") else host.strip("[]")
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no conflict
        try:
            sock.bind((bind_host, port))
        except OSError as err:
            raise ServerError(f"cannot listen on {host}:{port} ({err.strerror}): pick another --port") from None


def _first_line(err: Any) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:300]
