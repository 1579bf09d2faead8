"""New local SQLite stores start as a copy of an empty, fully migrated one instead of migrating from scratch.

MLflow builds a new SQLite store by running every alembic migration (~3 s on 2 idle cores, 17 s on a loaded
one): paid by every new working directory, every test and every `clfops train tracking.uri=sqlite:///NEW`.
The first such store is built by MLflow itself into the cache (`$CLFOPS_CACHE_DIR`, keyed by the MLflow
version, so an upgrade builds a new template); later new stores are a file copy (~5 ms). The template holds
the schema and its alembic revision only: the experiments row MLflow inserts at creation (its artifact
location is an absolute path under the creating process's working directory) is removed, so MLflow creates
the Default experiment itself, where the new store is used, exactly as on a fresh store.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

log = logging.getLogger("clfops")


def seed_sqlite_store(uri: str) -> Path | None:
    """When `uri` is a local SQLite store whose file does not exist yet, create it from the template and
    return its path (None otherwise). Call under the store's lock; any problem only means MLflow migrates
    the store as usual. A copy that fails (a full disk) leaves no temp file behind."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///"))
    if db.exists() or str(db) in ("", ":memory:"):
        return None
    tmp = db.with_name(f".{db.name}.{os.getpid()}.tmp")
    try:
        template = _template()
        shutil.copyfile(template, tmp)
        os.replace(tmp, db)
    except (OSError, sqlite3.Error) as err:
        tmp.unlink(missing_ok=True)
        log.debug(f"no SQLite store template ({err}); MLflow creates {db} itself")
    return db


def remove_failed_store(db: Path | None) -> None:
    """A store that `seed_sqlite_store` began and MLflow could not finish (disk full, read-only): removed,
    so the next run does not find an empty or half-migrated file. A store with runs in it is never touched
    (it existed before this process: `db` is None then)."""
    if db is None:
        return
    for path in (db, db.with_name(db.name + "-journal"), db.with_name(db.name + "-wal")):
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def _template() -> Path:
    import mlflow

    from clfops.data.cache import default_cache_dir

    path = default_cache_dir() / f"mlflow-{mlflow.__version__}-empty-store.db"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        build = Path(tmp) / "store.db"
        _migrate(f"sqlite:///{build}")
        with sqlite3.connect(build) as conn:
            conn.execute("DELETE FROM experiments")  # MLflow re-creates Default (id 0) where the copy is used
        conn.close()
        os.replace(build, path)  # atomic: concurrent builders each publish a complete file
    return path


def _migrate(uri: str) -> None:
    """Let MLflow create and migrate the store (its own code: the schema is exactly MLflow's)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(uri, default_artifact_root=tempfile.gettempdir())
    store.engine.dispose()
