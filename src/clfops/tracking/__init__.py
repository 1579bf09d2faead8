"""Every MLflow tracking call clfops makes lives in this package; this module only re-exports.

- store.py: the store (URI, reachability, SQLite setup under a lock), TrackingError
- tracker.py: `Tracker`, one MLflow run (params, tags, async metrics, artifacts, status; offline on a lost server)
- artifacts.py: finding runs, downloading their artifacts and models, logging evaluations
- registry.py: the model registry and logged models (versions, aliases, a run's model)
- studies.py: parent/child runs of compare and sweep
- rundirs.py: run directories, the local copy (create, lock, status.json, `clfops runs`, metrics.csv)
- sync.py: `clfops sync`, uploading a run dir the store lacks
- redact.py: URIs with credentials hidden

MLflow is the source of truth for runs; the run directory is the local copy that survives a lost server.
Model logging and promotion live in `clfops.registry`.
"""

from clfops.tracking.artifacts import RunRef, download_model, download_run_artifact, find_run, log_evaluation
from clfops.tracking.registry import MODEL_NAME, TORCH_MODEL_NAME, Registry, load_pyfunc
from clfops.tracking.store import DEFAULT_URI, TrackingError, client, resolve_uri, run_dir_lookup
from clfops.tracking.studies import PARENT_TAG, RunHistory, child_run_ids, end_pruned, run_histories, set_run_tags
from clfops.tracking.tracker import STATUSES, Tracker

__all__ = [
    "DEFAULT_URI",
    "MODEL_NAME",
    "PARENT_TAG",
    "STATUSES",
    "TORCH_MODEL_NAME",
    "Registry",
    "RunHistory",
    "RunRef",
    "Tracker",
    "TrackingError",
    "child_run_ids",
    "client",
    "download_model",
    "download_run_artifact",
    "end_pruned",
    "find_run",
    "load_pyfunc",
    "log_evaluation",
    "resolve_uri",
    "run_dir_lookup",
    "run_histories",
    "set_run_tags",
]
