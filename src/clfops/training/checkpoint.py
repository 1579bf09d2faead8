"""Resume points and the rules for what a resumed run may change (writes and loads: clfops.safe_files)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clfops.safe_files import CheckpointError, load_checkpoint

# ----- resume -----------------------------------------------------------------------------------------
# What may differ between the checkpoint's config and the resumed one. Anything that changes the network,
# the data it sees or the optimisation state breaks the run; the rest (more epochs: OneCycle/cosine stretch
# over the new length; tracking, logging) is allowed and recorded.
INCOMPATIBLE = (
    "model",
    "optimizer",  # its state (moments, LR) comes from the checkpoint: a changed value would be ignored
    "scheduler",
    "data.name",
    "data.root",
    "data.channels",
    "data.size",
    "data.train_limit",
    "data.val_fraction",
    "data.mean",
    "data.std",
    "trainer.channels_last",
)


@dataclass(frozen=True)
class ResumePoint:
    run_dir: Path
    checkpoint: Path
    config: dict[str, Any]  # the resolved config the checkpoint was written with
    classes: list[str]
    data_sha256: str
    epoch: int  # the epoch (0-based) the checkpoint was written in
    global_step: int
    mid_epoch: bool


def find_resume(target: str, run_dir_of_run_id: Any = None) -> ResumePoint:
    """resume=RUN_DIR | RUN_DIR/checkpoints/X.ckpt | an MLflow run id (looked up with `run_dir_of_run_id(id)`).

    A resumed run writes into the run dir the checkpoint belongs to: anything that is not provably a run
    dir (its config.yaml next to checkpoints/) is refused, so a loose .ckpt never makes clfops overwrite
    the files of whatever folder happens to hold it."""
    path = Path(target)
    if not path.exists() and run_dir_of_run_id is not None and len(target) == 32 and target.isalnum():
        path = Path(run_dir_of_run_id(target))
    if path.is_dir():
        if not (path / "config.yaml").is_file():
            raise CheckpointError(f"resume={target}: {path} is not a clfops run dir (no config.yaml)")
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise CheckpointError(f"resume={target}: no checkpoint at {path} (give a run dir, a .ckpt or a run id)")
    run_dir = path.resolve().parent.parent
    if path.resolve().parent.name != "checkpoints" or not (run_dir / "config.yaml").is_file():
        raise CheckpointError(
            f"resume={target}: a checkpoint must lie in RUN_DIR/checkpoints/ next to the run's config.yaml "
            "(give the run dir, its MLflow run id, or a checkpoint inside it)"
        )
    ckpt = load_checkpoint(path)
    info = ckpt.get("clfops")
    if not isinstance(info, dict):
        raise CheckpointError(f"{path}: not written by clfops train (no run config inside)")
    state = ckpt.get("epoch_state", {})
    return ResumePoint(
        run_dir=run_dir,
        checkpoint=path,
        config=info["config"],
        classes=list(info["classes"]),
        data_sha256=info["data_sha256"],
        epoch=int(ckpt.get("epoch", 0)),
        global_step=int(ckpt.get("global_step", 0)),
        mid_epoch=bool(state.get("mid_epoch", False)),
    )


def _get(tree: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def check_compatible(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Raise on a change that breaks the run; return the harmless changes (dotted keys) to record."""
    for key in INCOMPATIBLE:
        if _get(old, key) != _get(new, key):
            raise CheckpointError(
                f"cannot resume: {key} changed from {_get(old, key)!r} to {_get(new, key)!r} (start a new run instead)"
            )
    return sorted(k for k in _flat_keys(new) if k != "resume" and _get(old, k) != _get(new, k))


def _flat_keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            keys += _flat_keys(value, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys
