"""Every check a training run can make before it creates anything: `preflight(cfg, resume) -> Prepared`.

`clfops train` calls it before the run directory, its lock and the MLflow run exist, so a refused command
(a value out of range, contradicting settings, data that cannot be loaded or split, a tracking store that
cannot be reached or written) leaves nothing behind: one line, exit 2. The data is loaded here, once, and
handed to the run (loading is the slow check: it must happen anyway, and only loading proves every image
decodes). What can only fail during fit still ends the run FAILED, as before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from clfops import config as C
from clfops.data import DataError, Source
from clfops.data.loader import Splits, make_splits
from clfops.data.sources import load_source
from clfops.safe_files import CheckpointError
from clfops.serving.resolve import ResolvedModel
from clfops.tracking import TrackingError, client, resolve_uri
from clfops.training.build import check_settings
from clfops.training.checkpoint import ResumePoint
from clfops.training.finetune import InitModel, parse_freeze, resolve_init


@dataclass(frozen=True)
class Prepared:
    """What the checks produced and the run goes on with: the data, loaded and split; the model to fine-tune
    from (model.init, None on resume: the checkpoint holds the weights)."""

    source: Source
    splits: Splits
    init: InitModel | None = None


def preflight(cfg: DictConfig, resume: ResumePoint | None, parent: ResolvedModel | None = None) -> Prepared:
    """Config ranges + settings, data, tracking store: a UserError (one line) on the first that fails."""
    if resume is None:  # a resumed config is the checkpoint's own (checked when it started) plus overrides
        C.validate_ranges(cfg)
    check_settings(cfg)
    source, splits = load_data(cfg, resume)
    check_tracking(cfg, resume)
    # model.init: resolved and fitted to this run's net now (another architecture, channels that cannot adapt,
    # an unknown reference: one line). On resume only freeze is checked: the init is not applied again.
    init = resolve_init(cfg, source, parent) if resume is None else None
    parse_freeze(cfg.model.freeze)
    return Prepared(source, splits, init)


def load_data(cfg: DictConfig, resume: ResumePoint | None) -> tuple[Source, Splits]:
    """The run's data, loaded and split; too few classes or images for the split is a DataError."""
    if cfg.data.name == "stream":  # shards larger than memory (data/stream.py); sets data.mean/std if null
        from clfops.data.stream import open_stream

        source, splits = open_stream(cfg.data)
    else:
        size = None if cfg.data.size is None else (int(cfg.data.size[0]), int(cfg.data.size[1]))
        source = load_source(cfg.data.name, cfg.data.root, cfg.data.channels, size)
        splits = make_splits(source, cfg.data.val_fraction, cfg.seed, cfg.data.train_limit, cfg.data.test_limit)
    if resume is not None and source.sha256 != resume.data_sha256:
        raise CheckpointError(f"cannot resume: the data changed since the checkpoint (sha256 {source.sha256[:12]}…)")
    where = cfg.data.root or cfg.data.name
    if len(source.classes) < 2:
        raise DataError(f"data.root={where}: {len(source.classes)} class found, a classifier needs at least 2")
    for name in ("train", "val", "test"):
        if len(getattr(splits, name)) == 0:
            raise DataError(f"data.root={where}: no {name} images after the split; add images or change data.*")
    return source, splits


def check_tracking(cfg: DictConfig, resume: ResumePoint | None) -> None:
    """The store answers (a server) or can be written (a SQLite file), without creating a file or a run."""
    if not cfg.tracking.enabled:
        return
    uri = resolve_uri(cfg.tracking.uri)
    if uri.startswith("sqlite:///"):
        _check_sqlite_writable(Path(uri.removeprefix("sqlite:///")))
        return
    if uri.startswith("file:") or "://" not in uri:
        return  # a local folder store: MLflow creates it; its errors name the path
    try:
        client(uri, float(cfg.tracking.connect_timeout_s))  # reachable, schema current
    except TrackingError:
        raise
    except Exception as err:  # a database that refuses the login, a driver missing, ...
        text = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise TrackingError(f"tracking.uri={uri}: cannot open the store ({text})") from None


def _check_sqlite_writable(db: Path) -> None:
    folder = db.parent if str(db.parent) else Path(".")
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
    if db.exists() and not os.access(db, os.W_OK):
        raise TrackingError(f"tracking store {db} is not writable: fix its permissions or set tracking.uri")
    if not db.exists() and (not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK)):
        raise TrackingError(f"tracking store {db} cannot be created in {existing}: set tracking.uri")
