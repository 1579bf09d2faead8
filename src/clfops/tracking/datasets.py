"""A run's data as an MLflow dataset input (what `mlflow.log_input` records): the UI's Datasets column shows it
and `mlflow.search_runs(filter_string="dataset.name = 'fashion_mnist'")` finds the runs trained on it.

MLflow keeps a dataset's digest in a 36-character column: the digest is the first 32 hex digits of the data's
content sha256 (`data.sha256`, also the run param of that name); the full sha256 and the split sizes are in
the dataset's profile and in the input's tags (clfops.images.train/val/test), next to the context `training`.
Filter on all three: `dataset.name = 'N' AND dataset.digest = 'D' AND dataset.context = 'training'`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from clfops.tracking.tracker import Tracker

CONTEXT = "training"  # the mlflow.data.context input tag: what the run did with the data
DIGEST_CHARS = 32


@dataclass(frozen=True)
class DataRecord:
    name: str  # data.name (fashion_mnist, folder, stream, ...)
    sha256: str  # content hash of the decoded tensors (data.hashing)
    source: str  # where it was read from: a folder, or a URI for streamed shards
    sizes: dict[str, int]  # images per split: train, val, test


def digest(sha256: str) -> str:
    return sha256[:DIGEST_CHARS]


def log_dataset(tracker: Tracker, data: DataRecord) -> None:
    """One dataset input on the run (name, digest, source, profile); lost like any other call when offline."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    source_type = data.source.split("://", 1)[0] if "://" in data.source else "local"
    profile = {"sha256": data.sha256, **{f"images.{k}": v for k, v in data.sizes.items()}}
    dataset = Dataset(
        name=data.name,
        digest=digest(data.sha256),
        source_type=source_type,
        source=json.dumps({"uri": data.source}),
        profile=json.dumps(profile),
    )
    tags = [InputTag(MLFLOW_DATASET_CONTEXT, CONTEXT)]
    tags += [InputTag(f"clfops.images.{k}", str(v)) for k, v in data.sizes.items()]
    tracker.log_inputs([DatasetInput(dataset, tags)])
