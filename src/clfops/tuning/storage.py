"""The Optuna storage of `clfops sweep`: its URL from --storage or the tracking store, and opening it.

An RDB URL in the same SQL family as tracking: sqlite:///optuna.db next to a SQLite mlflow.db, PostgreSQL
(postgresql://..., driven by psycopg) on a team server. Opened with heartbeats, so a trial whose worker died
is failed instead of staying RUNNING.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna

from clfops.tracking.redact import redact_uri
from clfops.tuning import TuningError


def storage_url(storage: str | None, tracking_uri: str | None) -> str:
    """--storage, else sqlite optuna.db next to a SQLite mlflow.db, else ./optuna.db; bare postgresql:// and
    mysql:// get the drivers clfops installs (psycopg 3, PyMySQL)."""
    from clfops.tracking import resolve_uri

    if not storage:
        uri = resolve_uri(tracking_uri)
        folder = Path(uri.removeprefix("sqlite:///")).parent if uri.startswith("sqlite:///") else Path()
        return f"sqlite:///{folder / 'optuna.db'}"
    scheme, sep, rest = storage.partition("://")
    drivers = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg", "mysql": "mysql+pymysql"}
    if not sep:
        raise TuningError(f"--storage {storage!r}: use sqlite:///FILE or postgresql://USER:PW@HOST:PORT/DB")
    return f"{drivers.get(scheme, scheme)}://{rest}"


def open_storage(url: str) -> optuna.storages.RDBStorage:
    # Heartbeats: a trial whose worker died (kill -9, lost machine) is failed after the grace period instead
    # of staying RUNNING forever. SQLite waits up to 60 s for a lock held by the other workers.
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 4-5, and what we need
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=60, grace_period=180)
    except Exception as err:
        text = str(getattr(err, "orig", None) or err).strip().splitlines()[0][:200]
        raise TuningError(f"cannot open the Optuna storage {redact_uri(url)} ({text}): check --storage") from None
