"""`clfops register` and the end of `clfops train`: a run's logged model becomes a new registered version.

A run that logged no model (offline, or tracking.log_model=false) has it logged now from its run dir. A registered
model holds one flavor: the torch pyfunc model ("model") or the torch-free ONNX one ("onnx_model"), so that
models:/NAME@ALIAS always means the same kind of model. Promotion of a version is promote.py's.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from clfops.registry.model_logging import ONNX_MODEL_NAME, export_and_log_onnx, log_model
from clfops.registry.promote import PromotionError, check_name
from clfops.tracking import TrackingError
from clfops.tracking.registry import Registry

log = logging.getLogger("clfops")

FLAVORS = ("pyfunc", "onnx")  # pyfunc: the torch model ("model"); onnx: the torch-free one ("onnx_model")
FLAVOR_TAG = "clfops.flavor"


def _onnx_model_id(reg: Registry, run_id: str, local: Path) -> str:
    """The newest ONNX model `run_id` logged; exported from its run dir and logged now when there is none."""

    def newest() -> str | None:
        run = reg.run(run_id)
        ids = [o.model_id for o in (run.outputs.model_outputs if run.outputs else [])]
        found = [m for m in (reg.client.get_logged_model(i) for i in ids) if m.name == ONNX_MODEL_NAME]
        return max(found, key=lambda m: m.creation_timestamp).model_id if found else None

    model_id = newest()
    if model_id is None:
        if not (local / "manifest.json").is_file():
            raise PromotionError(f"run {run_id} logged no ONNX model and its run dir ({local.parent}) is not here")
        export_and_log_onnx(reg.uri, run_id, local, None)
        model_id = newest()
    assert model_id is not None
    return model_id


def _check_flavor(reg: Registry, name: str, flavor: str) -> None:
    """One flavor per registered model, so that models:/NAME@ALIAS always means the same kind of model."""
    versions = reg.versions(name)
    held = {mv.tags.get(FLAVOR_TAG, "pyfunc") for mv in versions}
    if versions and held != {flavor}:
        other = ", ".join(sorted(held))
        hint = f" (e.g. {name}-onnx)" if flavor == "onnx" else ""
        raise PromotionError(
            f"registered model {name} holds {other} models, not {flavor}: register under another name{hint}"
        )


def register(uri: str | None, run_id: str, name: str, flavor: str = "pyfunc") -> Any:
    """A new version of `name` from the model `run_id` logged (logged now from its run dir when it has none).

    flavor "pyfunc": the torch pyfunc model; "onnx": the torch-free ONNX model. A registered model holds one."""
    check_name(name)
    if flavor not in FLAVORS:
        raise PromotionError(f"--flavor {flavor}: use one of {', '.join(FLAVORS)}")
    reg = Registry(uri)
    run = reg.run(run_id)
    _check_flavor(reg, name, flavor)
    local = Path(run.data.tags.get("clfops.run_dir", "")) / "model"
    if flavor == "onnx":
        model_id: str | None = _onnx_model_id(reg, run_id, local)
    else:
        model_id = reg.run_model_id(run_id)
    if model_id is None:
        if not (local / "manifest.json").is_file():
            raise PromotionError(f"run {run_id} logged no model and its run dir ({local}) is not here")
        log_model(reg.uri, run_id, local, None)
        model_id = reg.run_model_id(run_id)
    metrics, params, tags = run.data.metrics, run.data.params, run.data.tags
    version_tags = {
        "test_acc": f"{metrics['test/acc']:.6f}" if "test/acc" in metrics else "",
        "data_sha256": params.get("data.sha256", ""),
        "git_commit": tags.get("mlflow.source.git.commit", ""),
        "clfops.run_dir": tags.get("clfops.run_dir", ""),
        FLAVOR_TAG: flavor,
    }
    return reg.register(name, run_id, str(model_id), {k: v for k, v in version_tags.items() if v})


def log_run_model(
    tracker: Any, model_dir: Path, example: Any, torch_flavor: bool, register_as: str | None, log_onnx: bool = False
) -> dict[str, Any]:
    """End of `clfops train`: log the model, the ONNX model too with `log_onnx` (tracking.log_onnx), and register
    the pyfunc model. Failures warn: the run itself is done."""
    if tracker.offline:
        log.warning("MLflow is offline: the model was not logged; the run dir keeps it (model/)")
        return {}
    from clfops.models import FlipAveraged
    from clfops.serving.saved_model import load_model

    try:
        t0 = time.perf_counter()
        net, manifest = load_model(model_dir) if torch_flavor else (None, None)
        if net is not None and manifest is not None and manifest.test_flip:
            net = FlipAveraged(net)  # the torch flavor answers as the pyfunc model does
        out: dict[str, Any] = {"model_uri": log_model(tracker.uri, tracker.run_id, model_dir, example, net)}
        out["model_log_seconds"] = round(time.perf_counter() - t0, 3)
        if log_onnx:
            out["onnx_model_uri"] = _log_onnx(tracker, model_dir, example)
        if register_as:
            tracker.flush()  # test/* points go through the async queue: the version tags read them
            out["model_version"] = str(register(tracker.uri, tracker.run_id, register_as).version)
    except (TrackingError, PromotionError) as err:
        log.warning(f"{err} (training is done; `clfops register --run-id {tracker.run_id}` can do it later)")
        return {}
    return out


def _log_onnx(tracker: Any, model_dir: Path, example: Any) -> str | None:
    """The ONNX model beside the pyfunc one; an architecture the exporter cannot take warns (training is done)."""
    try:
        return export_and_log_onnx(tracker.uri, tracker.run_id, model_dir, example)
    except ImportError as err:
        log.warning(f"no ONNX model logged: {err} (install the onnx extra: pip install 'clfops[onnx]')")
    except TrackingError as err:
        log.warning(f"{err} (the pyfunc model is logged; `clfops export --run-id {tracker.run_id}` makes the file)")
    except Exception as err:  # the exporter's failure on an unusual architecture
        log.warning(f"no ONNX model logged: the export failed: {str(err).splitlines()[0] if str(err) else err!r}")
    return None
