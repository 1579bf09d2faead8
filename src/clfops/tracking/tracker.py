"""One MLflow run as clfops logs to it (`Tracker`): params, tags, data set inputs, metrics, artifacts, status.

Metric points go through `log_batch(synchronous=False)` (MLflow's async queue) and are flushed before the
run ends, so logging costs the training loop almost nothing. A server that stops answering mid-run turns
the tracker offline with one warning: training goes on and `clfops sync RUN_DIR` uploads it later.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from clfops.tracking.redact import redact_text, redact_uri
from clfops.tracking.store import (
    TrackingError,
    check_reachable,
    client,
    experiment_id,
    first_line,
    resolve_uri,
    with_user,
)

log = logging.getLogger("clfops")
STATUSES = ("FINISHED", "FAILED", "KILLED")


class Tracker:
    """One MLflow run. `offline` becomes True when the server stops answering; nothing raises then."""

    def __init__(self, mlflow_client: Any, run_id: str, uri: str) -> None:
        self.client, self.run_id, self.uri = mlflow_client, run_id, uri
        self.offline = False
        self.run_dir: Path | None = None  # named in the offline warning
        self.points_logged = 0
        self._pending: list[Any] = []  # RunOperations of async log_batch calls, waited on in flush()

    @classmethod
    def start(cls, uri: str | None, experiment: str, run_name: str, tags: dict[str, str], timeout_s: float) -> Tracker:
        uri = resolve_uri(uri)
        try:
            c = client(uri, timeout_s)
            exp_id = experiment_id(c, experiment, uri)
            clean = {k: redact_text(str(v)) for k, v in with_user(tags).items()}  # clfops.command: overrides
            run = c.create_run(exp_id, run_name=run_name, tags=clean)
        except TrackingError:
            raise
        except Exception as err:
            raise TrackingError(f"cannot start an MLflow run on {redact_uri(uri)}: {first_line(err)}") from None
        return cls(c, run.info.run_id, uri)

    @classmethod
    def reopen(cls, uri: str | None, run_id: str, timeout_s: float) -> Tracker:
        """Continue an existing run (resume): its status goes back to RUNNING."""
        uri = resolve_uri(uri)
        c = client(uri, timeout_s)
        try:
            c.get_run(run_id)
            c.update_run(run_id, status="RUNNING")
        except Exception as err:
            raise TrackingError(f"cannot reopen MLflow run {run_id} on {redact_uri(uri)}: {first_line(err)}") from None
        return cls(c, run_id, uri)

    def _guard(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self.offline:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            self._go_offline(f"{what} failed: {first_line(err)}")
            return None

    def _go_offline(self, reason: str) -> None:
        self.offline = True
        self._pending.clear()
        # MLflow's async queue keeps retrying what it holds and logs each failure: one warning from us is enough.
        logging.getLogger("mlflow.utils.async_logging").setLevel(logging.CRITICAL)
        logging.getLogger("mlflow.utils.async_logging.async_logging_queue").setLevel(logging.CRITICAL)
        log.warning(
            f"tracking server {redact_uri(self.uri)} stopped answering ({reason}); training goes on and the run "
            f"dir keeps everything: run `clfops sync {self.run_dir or 'RUN_DIR'}` when the server is back"
        )

    def log_params(self, params: dict[str, Any]) -> None:
        """Values redacted here (tracking.uri, data roots with keys): no caller can leak a credential."""
        from mlflow.entities import Param

        items = [Param(k, _param_value(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
            self._guard("log_params", self.client.log_batch, self.run_id, params=items[i : i + 100])

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, redact_text(str(v))[:5000]) for k, v in tags.items()]  # clfops.command, error
        self._guard("set_tags", self.client.log_batch, self.run_id, tags=items)

    def log_inputs(self, datasets: list[Any]) -> None:
        """mlflow.entities.DatasetInput records (tracking/datasets.py builds them). A failure here (a SQLite store
        locked by concurrent runs, say) warns and leaves the tracker online: the dataset record is provenance,
        and metrics and the final status must still reach the store."""
        if self.offline:
            return
        try:
            self.client.log_inputs(self.run_id, datasets=datasets)
        except Exception as err:
            log.warning(f"the data set was not recorded as an MLflow input: {first_line(err)}")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if items:
            ops = self._guard("log_metrics", self.client.log_batch, self.run_id, metrics=items, synchronous=False)
            if ops is not None:
                self._pending.append(ops)
                self.points_logged += len(items)

    def flush(self) -> None:
        """Wait until queued points are stored. A server that does not answer /health within 5 s is not
        waited on (its queued calls would each retry for minutes): the tracker goes offline instead."""
        if self.offline or not self._pending:
            return
        if self.uri.startswith(("http://", "https://")):
            try:
                check_reachable(self.uri, timeout_s=5.0)
            except TrackingError:
                self._go_offline("no answer to /health")
                return
        pending, self._pending = self._pending, []
        for ops in pending:
            self._guard("log_metrics", ops.wait)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if path.exists():
            self._guard("log_artifact", self.client.log_artifact, self.run_id, str(path), artifact_path)

    def log_artifacts(self, directory: Path, artifact_path: str | None = None) -> None:
        if directory.exists():
            self._guard("log_artifacts", self.client.log_artifacts, self.run_id, str(directory), artifact_path)

    def end(self, status: str, error: str | None = None) -> None:
        """Flush queued points, record why it failed, set the terminal status."""
        assert status in STATUSES, status
        self.flush()
        if error:
            self.set_tags({"error": error})
        self._guard("set_terminated", self.client.set_terminated, self.run_id, status)

    def last_steps(self) -> dict[str, int]:
        """The highest step already stored per metric: a resumed run does not send those points again."""
        run = self._guard("get_run", self.client.get_run, self.run_id)
        if run is None:
            return {}
        steps = {}
        for key in run.data.metrics:
            history = self._guard("get_metric_history", self.client.get_metric_history, self.run_id, key) or []
            steps[key] = max((m.step for m in history), default=-1)
        return steps

    def artifact_uri(self) -> str | None:
        run = self._guard("get_run", self.client.get_run, self.run_id)
        return run.info.artifact_uri if run else None


def _param_value(value: Any) -> str:
    text = "null" if value is None else redact_text(str(value))
    return text if len(text) <= 6000 else text[:5997] + "..."
