"""`clfops server` for real: PostgreSQL, MariaDB, S3 (SeaweedFS) and basic auth on loopback, and its checks.

The shared database services are only used to create and drop one database per test; nothing here stops
them (test_server_faults.py runs its own PostgreSQL). Every server is stopped and every process it forked
is accounted for in teardown. The helpers here are imported by test_server_faults.py.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow.artifacts
import pytest
from mlflow.tracking import MlflowClient

from clfops.training.train import train
from conftest import CLFOPS, S3_KEY, S3_SECRET, free_port, pg_database, run_cli

PG_PORT, MYSQL_PORT = 5432, 3306


@contextlib.contextmanager
def mysql_database() -> Iterator[str]:
    import pymysql

    name = f"clfops_{uuid.uuid4().hex[:12]}"
    conn = pymysql.connect(host="127.0.0.1", port=MYSQL_PORT, user="root", password="", autocommit=True)
    try:
        conn.cursor().execute(f"CREATE DATABASE `{name}`")
        yield name
    finally:
        conn.ping(reconnect=True)
        conn.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time): start time tells a live process from a reused pid."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if fields[0] != "Z":
                    table[int(entry.name)] = (int(fields[1]), fields[19])
    return table


def descendants(pid: int) -> dict[int, str]:
    table = _proc_table()
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, started) in table.items():
            if ppid == parent and child not in found:
                found[child] = started
                todo.append(child)
    return found


def still_alive(procs: dict[int, str]) -> list[int]:
    table = _proc_table()
    return [pid for pid, started in procs.items() if pid in table and table[pid][1] == started]


class Server:
    """`clfops server ARGS` as a real subprocess, its output in a log file."""

    def __init__(self, workdir: Path, args: list[str], env: dict[str, str] | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"server-{self.port}.log"
        cmd = [*CLFOPS, "server", "--port", str(self.port), *args]
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(cmd, cwd=workdir, env={**os.environ, **(env or {})}, stdout=out, stderr=out)
        self.children: dict[int, str] = {}

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited {self.proc.returncode}:\n{self.output()[-3000:]}"
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2):
                    break
            except urllib.error.HTTPError:
                break  # answering (auth): up
            except OSError:
                time.sleep(0.3)
        else:
            raise AssertionError(f"server not ready in {timeout_s}s:\n{self.output()[-3000:]}")
        self.children = descendants(self.proc.pid)

    def stop(self, sig: int = signal.SIGINT, timeout_s: float = 30) -> list[int]:
        """Signal clfops; returns the pids of its former children still alive after it exited."""
        if self.proc.poll() is None:
            self.children.update(descendants(self.proc.pid))
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return still_alive(self.children)

    def kill_all(self) -> None:
        """Teardown: whatever is left of this server goes, by pid."""
        leftovers = self.stop()
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def clfops_server(workdir: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    server = Server(workdir, list(args), env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.kill_all()


def csv_points(run_dir: Path) -> dict[str, int]:
    """Metric name -> number of points in the run dir's metrics.csv."""
    counts: dict[str, int] = {}
    with (run_dir / "metrics.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            for key, value in row.items():
                if key not in ("step", "epoch", "time") and value not in ("", None):
                    counts[key] = counts.get(key, 0) + 1
    return counts


def assert_run_complete(client: MlflowClient, run_id: str, run_dir: Path) -> None:
    """FINISHED on the server, and every metric point of metrics.csv stored there."""
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED", run.info.status
    local = csv_points(run_dir)
    assert local and "train/loss" in local and "val/acc" in local
    stored = {key: len(client.get_metric_history(run_id, key)) for key in local}
    assert stored == local
    assert run.data.params["model.name"] == "quick_cnn" and "optimizer.lr" in run.data.params


def _train_against(compose, url: str, name: str, log_model: bool = False) -> tuple[dict[str, Any], MlflowClient]:
    overrides = [f"tracking.uri={url}", f"run.name={name}", "tracking.log_every_n_steps=1"]
    summary = train(compose(*overrides, f"tracking.log_model={str(log_model).lower()}"))
    return summary, MlflowClient(tracking_uri=url)


@pytest.mark.postgres
@pytest.mark.multiprocess
def test_postgres_backend_train_read_back_and_ctrl_c(tmp_path: Path, compose) -> None:
    art = tmp_path / "artifacts"
    with pg_database() as db, clfops_server(
        tmp_path, "--backend-store-uri", f"postgresql://postgres@127.0.0.1:{PG_PORT}/{db}",
        "--artifacts-destination", str(art), "--workers", "2",
    ) as server:  # fmt: skip
        assert f"tracking.uri={server.url}" in server.output()
        summary, client = _train_against(compose, server.url, "pg")
        run_dir = Path(summary["run_dir"])
        assert_run_complete(client, summary["run_id"], run_dir)
        run = client.get_run(summary["run_id"])
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied through the server
        names = {a.path for a in client.list_artifacts(summary["run_id"])}
        assert {"config.yaml", "metrics.csv", "summary.json", "train.log"} <= names
        stored = list(art.rglob("metrics.csv"))
        assert len(stored) == 1 and stored[0].read_bytes() == (run_dir / "metrics.csv").read_bytes()
        assert len(server.children) >= 2  # mlflow server + uvicorn (+ its workers)
        leftovers = server.stop(signal.SIGINT)
        assert leftovers == [] and server.proc.returncode == 0, server.output()[-2000:]


@pytest.mark.mariadb
@pytest.mark.multiprocess
def test_mariadb_backend_with_s3_artifacts(tmp_path: Path, compose, seaweed: dict[str, str]) -> None:
    import boto3

    from clfops.serving.saved_model import load_model

    with mysql_database() as db, clfops_server(
        tmp_path, "--backend-store-uri", f"mysql://root@127.0.0.1:{MYSQL_PORT}/{db}",
        "--artifacts-destination", "s3://mlflow/team", "--workers", "1", env=seaweed,
    ) as server:  # fmt: skip
        summary, client = _train_against(compose, server.url, "maria", log_model=True)
        run_id, run_dir = summary["run_id"], Path(summary["run_dir"])
        assert_run_complete(client, run_id, run_dir)
        # The logged model round-trips: up through the server into S3, back down, sha256-checked on load.
        model_id = summary["model_uri"].removeprefix("models:/")
        location = client.get_logged_model(model_id).artifact_location  # mlflow-artifacts:/...: via the server
        assert location.startswith("mlflow-artifacts:"), location
        down = mlflow.artifacts.download_artifacts(location, dst_path=str(tmp_path / "model"), tracking_uri=server.url)
        weights = next(Path(down).rglob("model.safetensors"))
        _net, manifest = load_model(weights.parent, expected_classes=summary["classes"])
        assert manifest.run_id == run_id
        assert weights.read_bytes() == (run_dir / "model" / "model.safetensors").read_bytes()
        metrics = client.download_artifacts(run_id, "metrics.csv", str(tmp_path / "down"))
        assert Path(metrics).read_bytes() == (run_dir / "metrics.csv").read_bytes()
        s3 = boto3.client("s3", endpoint_url=seaweed["MLFLOW_S3_ENDPOINT_URL"], aws_access_key_id=S3_KEY,
                          aws_secret_access_key=S3_SECRET, region_name="us-east-1")  # fmt: skip
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow", Prefix="team/")["Contents"]]
        assert any(k.endswith(f"{run_id}/artifacts/metrics.csv") for k in keys), keys
        assert any(model_id in k and k.endswith("model.safetensors") for k in keys), keys
        assert server.stop(signal.SIGTERM) == [] and server.proc.returncode == 0
        # A bucket that does not exist is found before the server starts.
        proc = _server_cli(tmp_path, "--artifacts-destination", "s3://no-such-bucket", env={**os.environ, **seaweed})
        assert "'no-such-bucket' does not exist" in _one_line_error(proc)


def _api(url: str, path: str, user: tuple[str, str] | None, body: dict[str, Any] | None = None) -> int:
    """HTTP status of one REST call (POST with a JSON body, else GET), as `user` (name, password) or anonymous."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method="POST" if data else "GET")
    req.add_header("Content-Type", "application/json")
    if user:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.postgres
@pytest.mark.multiprocess
def test_auth_401_and_per_user_permissions(tmp_path: Path, compose, monkeypatch: pytest.MonkeyPatch) -> None:
    admin = ("admin", f"adm-{uuid.uuid4().hex}")
    alice, bob = ("alice", f"alice-{uuid.uuid4().hex}"), ("bob", f"bob-{uuid.uuid4().hex}")
    (tmp_path / "admin.pw").write_text(admin[1] + "\n")
    with pg_database() as db, clfops_server(
        tmp_path, "--backend-store-uri", f"postgresql://postgres@127.0.0.1:{PG_PORT}/{db}", "--auth",
        "--admin-password-file", str(tmp_path / "admin.pw"), "--default-permission", "NO_PERMISSIONS",
        "--workers", "1",
    ) as server:  # fmt: skip
        url = server.url
        assert admin[1] not in server.output()
        assert _api(url, "/api/2.0/mlflow/experiments/search?max_results=1", None) == 401
        assert _api(url, "/api/2.0/mlflow/experiments/search?max_results=1", (admin[0], "wrong-password")) == 401
        for name, password in (alice, bob):
            body = {"username": name, "password": password}
            assert _api(url, "/api/2.0/mlflow/users/create", admin, body) == 200
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", alice[0])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", alice[1])
        summary, client = _train_against(compose, url, "alice")
        assert_run_complete(client, summary["run_id"], Path(summary["run_dir"]))
        exp_id = client.get_run(summary["run_id"]).info.experiment_id
        run_path = f"/api/2.0/mlflow/runs/get?run_id={summary['run_id']}"
        exp_path = f"/api/2.0/mlflow/experiments/get?experiment_id={exp_id}"
        assert _api(url, run_path, alice) == 200
        assert _api(url, run_path, bob) == 403 and _api(url, exp_path, bob) == 403
        grant = {"username": bob[0], "resource_type": "experiment", "resource_id": exp_id, "permission": "READ"}
        assert _api(url, "/api/3.0/mlflow/users/permissions/grant", bob, grant) == 403  # not his to give
        assert _api(url, "/api/3.0/mlflow/users/permissions/grant", alice, grant) == 200  # alice manages it
        assert _api(url, run_path, bob) == 200
        assert _api(url, "/api/2.0/mlflow/runs/delete", bob, {"run_id": summary["run_id"]}) == 403  # READ only


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("clfops: error: ") and "Traceback" not in proc.stderr, proc.stderr
    return lines[-1]


def _server_cli(workdir: Path, *args: str, env: dict[str, str] | None = None, code: str | None = None):
    """`clfops server ARGS --port FREE` in workdir; `env` replaces the environment, `code` the entry point."""
    entry = [sys.executable, "-c", code] if code else CLFOPS
    cmd = [*entry, "server", *args, "--port", str(free_port())]
    return subprocess.run(cmd, cwd=workdir, env=env or dict(os.environ), capture_output=True, text=True, timeout=60)


def test_refuses_non_loopback_without_auth(tmp_path: Path) -> None:
    proc = _server_cli(tmp_path, "--host", "0.0.0.0")
    line = _one_line_error(proc)
    assert "0.0.0.0" in line and "--auth" in line and len(proc.stderr.strip().splitlines()) == 1
    # --insecure passes the bind check with a warning (and then stops at the unreachable database).
    port = free_port()
    db = f"postgresql://postgres@127.0.0.1:{port}/x"
    proc = _server_cli(tmp_path, "--host", "0.0.0.0", "--insecure", "--backend-store-uri", db)
    assert "WARNING: --insecure" in proc.stderr and f"127.0.0.1:{port}" in _one_line_error(proc)
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_unreachable_database_is_one_line(tmp_path: Path, scheme: str) -> None:
    port = free_port()  # nothing listens there
    proc = _server_cli(tmp_path, "--backend-store-uri", f"{scheme}://u:secret-pw@127.0.0.1:{port}/db")
    line = _one_line_error(proc)
    assert f"127.0.0.1:{port}" in line and "secret-pw" not in proc.stderr


def test_startup_checks_name_the_fix(tmp_path: Path) -> None:
    proc = _server_cli(tmp_path, "--backend-store-uri", f"postgresql://postgres@127.0.0.1:{PG_PORT}/no_such_db_x")
    assert "no_such_db_x" in _one_line_error(proc)
    # A missing driver, for real: the interpreter cannot import psycopg in this child.
    code = "import sys; sys.modules['psycopg'] = None; from clfops.cli import main; main()"
    proc = _server_cli(tmp_path, "--backend-store-uri", "postgresql://postgres@127.0.0.1/x", code=code)
    assert "pip install 'clfops[server]'" in _one_line_error(proc)
    proc = _server_cli(tmp_path, "--auth", env={**os.environ, "CLFOPS_ADMIN_PASSWORD": ""})
    assert "CLFOPS_ADMIN_PASSWORD" in _one_line_error(proc)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = run_cli("server", "--port", str(busy.getsockname()[1]), cwd=tmp_path, timeout=60)
        assert "pick another --port" in _one_line_error(proc)
    no_aws = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_S3"))}
    no_aws.update(AWS_SHARED_CREDENTIALS_FILE="/nonexistent", AWS_CONFIG_FILE="/nonexistent")
    no_aws.update(AWS_EC2_METADATA_DISABLED="true")  # no instance-metadata probe for credentials
    proc = _server_cli(tmp_path, "--artifacts-destination", "s3://b", env=no_aws)
    assert "AWS_ACCESS_KEY_ID" in _one_line_error(proc)
    no_aws.update(AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s")
    proc = _server_cli(tmp_path, "--artifacts-destination", "s3://b", env=no_aws)
    assert "MLFLOW_S3_ENDPOINT_URL" in _one_line_error(proc)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlartifacts").exists()
