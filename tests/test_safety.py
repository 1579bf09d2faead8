"""Secrets and files stay safe: no stored credential, no write outside a run, bounded runs, strict data roots,
clean ends on a full disk, and one-line errors for the small mistakes."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import mlflow.artifacts
import pytest
from mlflow.tracking import MlflowClient

from clfops import config as C
from clfops.data import DataError
from clfops.data.sources import load_source
from clfops.safe_files import CheckpointError
from clfops.tracking.redact import redact_uri
from clfops.training.checkpoint import find_resume
from conftest import TINY, pg_database, run_cli
from test_server import clfops_server

SYSTEM_FMNIST = Path("/usr/share/datasets/fashion-mnist")


def _planted() -> str:
    return f"Pl4nted{uuid.uuid4().hex[:10]}"


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one `clfops: error:` line, and no traceback (a started run also logs its progress)."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("clfops: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def _everything(root: Path, client: MlflowClient, run_id: str, model_uri: str | None, out: Path) -> dict[str, bytes]:
    """Every byte a run leaves: its run dir (.ckpt included), MLflow params, tags, artifacts, logged model."""
    found = {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    run = client.get_run(run_id)
    found["params"] = json.dumps(run.data.params).encode()
    found["tags"] = json.dumps(run.data.tags).encode()
    arts = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, dst_path=str(out / "artifacts"), tracking_uri=client.tracking_uri
        )
    )
    found |= {f"artifact:{p}": p.read_bytes() for p in arts.rglob("*") if p.is_file()}
    if model_uri:
        location = client.get_logged_model(model_uri.rsplit("/", 1)[-1]).artifact_location
        where, store = str(out / "model"), client.tracking_uri
        model = Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=where, tracking_uri=store))
        found |= {f"model:{p}": p.read_bytes() for p in model.rglob("*") if p.is_file()}
    return found


def _assert_nowhere(secret: str, found: dict[str, bytes]) -> None:
    leaks = [name for name, data in found.items() if secret.encode() in data]
    assert not leaks, f"{secret} found in {leaks}"
    assert any(name.endswith(".ckpt") for name in found) and any("report.html" in n for n in found)


# ----- 1: credentials -------------------------------------------------------------------------------


def test_redact_every_scheme_we_accept() -> None:
    from clfops.tracking.redact import redact_text

    cases = {
        "postgresql://alice:s3cr3tA@127.0.0.1:5432/mlflow": "postgresql://alice:***@127.0.0.1:5432/mlflow",
        "mysql+pymysql://root:s3cr3tB@h:3306/db": "mysql+pymysql://root:***@h:3306/db",
        "https://user:s3cr3tC@mlflow.example.com/": "https://user:***@mlflow.example.com/",
        "s3://AKIAKEY:s3cr3tD@bucket/prefix": "s3://AKIAKEY:***@bucket/prefix",
        "https://h/x?X-Amz-Signature=s3cr3tE&a=1": "https://h/x?X-Amz-Signature=***&a=1",
        "sqlite:///mlflow.db": "sqlite:///mlflow.db",
    }
    for uri, shown in cases.items():
        assert redact_uri(uri) == shown
    line = redact_text("clfops train tracking.uri=postgresql://alice:s3cr3tA@h/db; then s3cr3tA alone")
    assert "s3cr3tA" not in line and "alice:***@h/db" in line


def _train_cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli("train", *TINY, f"run.root={tmp_path / 'runs'}", *args, cwd=tmp_path, env=env)


@pytest.mark.postgres
def test_postgres_password_is_nowhere_and_resume_takes_it_from_the_environment(tmp_path: Path) -> None:
    secret = _planted()
    with pg_database() as db:
        uri = f"postgresql+psycopg://postgres:{secret}@127.0.0.1:5432/{db}"
        proc = _train_cli(tmp_path, f"tracking.uri={uri}", "run.name=pg", "checkpoint.every_n_epochs=1")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert secret not in proc.stdout + proc.stderr
        run_dir = tmp_path / "runs" / "pg"
        summary = json.loads((run_dir / "summary.json").read_text())
        client = MlflowClient(tracking_uri=uri)
        found = _everything(run_dir, client, summary["run_id"], summary.get("model_uri"), tmp_path / "dl")
        _assert_nowhere(secret, found)
        assert "postgres:***@" in (run_dir / "eval" / "report.html").read_text()
        assert client.get_run(summary["run_id"]).data.params["tracking.uri"] == redact_uri(uri)

        # Resume: the stored URI has no password; without one in the environment it is one line, exit 2.
        again = _train_cli(tmp_path, f"resume={run_dir}", "trainer.max_epochs=2")
        assert again.returncode != 0 and "without its password" in again.stderr
        again = _train_cli(tmp_path, f"resume={run_dir}", "trainer.max_epochs=2", env={"MLFLOW_TRACKING_URI": uri})
        assert again.returncode == 0, again.stderr[-3000:]
        assert secret not in again.stdout + again.stderr
        run = client.get_run(summary["run_id"])
        assert run.info.status == "FINISHED" and len(client.get_metric_history(run.info.run_id, "val/acc")) == 2
        _assert_nowhere(secret, _everything(run_dir, client, run.info.run_id, None, tmp_path / "dl2"))


@pytest.mark.multiprocess
def test_http_credentials_go_as_basic_auth_and_are_nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = _planted() + "xyz"  # the server's policy: at least 12 characters
    with pg_database() as db:
        backend = f"postgresql://postgres@127.0.0.1:5432/{db}"
        server_env = {"CLFOPS_ADMIN_PASSWORD": secret}
        with clfops_server(tmp_path, "--backend-store-uri", backend, "--auth", env=server_env) as server:
            uri = server.url.replace("http://", f"http://admin:{secret}@")
            env = {"CLFOPS_ADMIN_PASSWORD": ""}  # the trainer knows the password only from its URI
            proc = _train_cli(tmp_path, f"tracking.uri={uri}", "run.name=http", env=env)
            assert proc.returncode == 0, proc.stderr[-3000:]  # the probe reached /health (it said unreachable)
            assert secret not in proc.stdout + proc.stderr
            run_dir = tmp_path / "runs" / "http"
            summary = json.loads((run_dir / "summary.json").read_text())
            monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
            monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", secret)
            client = MlflowClient(tracking_uri=server.url)
            found = _everything(run_dir, client, summary["run_id"], summary.get("model_uri"), tmp_path / "dl")
            _assert_nowhere(secret, found)
            assert json.loads((run_dir / "run.json").read_text())["tracking_uri"] == server.url


# ----- 2, 3: writes stay in their run ---------------------------------------------------------------


def test_resume_refuses_a_checkpoint_outside_a_run_dir(tmp_path: Path) -> None:
    some = tmp_path / "SOME" / "DIR"
    (some / "sub").mkdir(parents=True)
    (some / "config.yaml").write_text("precious: true\n")
    (some / "sub" / "x.ckpt").write_bytes(b"not a checkpoint")
    (tmp_path / "x.ckpt").write_bytes(b"not a checkpoint")
    for target in (some / "sub" / "x.ckpt", tmp_path / "x.ckpt", tmp_path / "SOME"):
        with pytest.raises(CheckpointError, match=r"RUN_DIR/checkpoints|not a clfops run dir"):
            find_resume(str(target))
    proc = _train_cli(tmp_path, f"resume={some / 'sub' / 'x.ckpt'}")
    assert proc.returncode == 2 and "RUN_DIR/checkpoints" in _one_line(proc)
    assert sorted(p.name for p in some.iterdir()) == ["config.yaml", "sub"]
    assert (some / "config.yaml").read_text() == "precious: true\n"


@pytest.mark.parametrize("name", ["../x", "/tmp/abs-run", "a/b", "", ".", ".."])
def test_run_name_is_one_path_component(tmp_path: Path, name: str) -> None:
    with pytest.raises(C.ConfigError, match="single folder name"):
        C.compose("train", [f"run.name='{name}'"])


def test_bad_run_name_and_endless_epochs_create_nothing(tmp_path: Path) -> None:
    for args in (["run.name=../escaped"], ["trainer.max_epochs=-1", "scheduler=none"], ["trainer.max_epochs=0"]):
        proc = run_cli("train", f"run.root={tmp_path / 'runs'}", *args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr[-2000:]
        line = _one_line(proc)
        assert "run.name" in line or "trainer.max_epochs" in line
        assert sorted(p.name for p in tmp_path.iterdir()) == []


# ----- 4: bounded checkpoints -------------------------------------------------------------------------


def test_periodic_checkpoints_keep_the_newest(tmp_path: Path, compose) -> None:
    from clfops.training.train import train

    cfg = compose("run.name=keep", "trainer.max_epochs=4", "checkpoint.every_n_epochs=1", "checkpoint.keep_periodic=2",
                  "tracking.enabled=false", "data.train_limit=256")  # fmt: skip
    train(cfg)
    names = sorted(p.name for p in (tmp_path / "runs" / "keep" / "checkpoints").glob("*.ckpt"))
    assert names == ["best.ckpt", "epoch002.ckpt", "epoch003.ckpt", "last.ckpt"]


# ----- 5: strict data roots ---------------------------------------------------------------------------


def test_a_data_root_missing_a_file_is_refused(tmp_path: Path) -> None:
    assert SYSTEM_FMNIST.is_dir()
    files = sorted(p for p in SYSTEM_FMNIST.iterdir() if "ubyte" in p.name)
    root = tmp_path / "mine"
    root.mkdir()
    for f in files:
        if "t10k-labels" not in f.name:
            shutil.copy(f, root / f.name)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_source("fashion_mnist", str(root))
    proc = _train_cli(tmp_path, f"data.root={root}", "tracking.enabled=false")
    assert proc.returncode == 2 and "t10k-labels-idx1-ubyte" in _one_line(proc)


# ----- 6: a full disk ----------------------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(path: Path, size: str = "512k") -> Iterator[Path]:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize("store_on_disk", [True, False])
def test_a_full_disk_ends_in_one_line_without_debris(tmp_path: Path, store_on_disk: bool) -> None:
    with small_disk(tmp_path / "small") as small:
        store = small / "mlflow.db" if store_on_disk else tmp_path / "mlflow.db"
        proc = run_cli("train", *TINY, f"run.root={small / 'runs'}", f"tracking.uri=sqlite:///{store}", cwd=small)
        assert proc.returncode in (1, 2), proc.stderr[-3000:]
        line = _one_line(proc)
        assert "ENOSPC" in line or "No space left" in line or "disk is full" in line, line
        left = [p for p in small.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".mlflow")]
        assert not left
        assert not (small / "mlflow.db").exists() or (small / "mlflow.db").stat().st_size > 0
        for status in small.glob("runs/*/status.json"):
            assert json.loads(status.read_text())["status"] == "FAILED"
        if not store_on_disk:
            runs = MlflowClient(tracking_uri=f"sqlite:///{store}").search_runs(["0", "1"])
            assert runs and all(r.info.status == "FAILED" for r in runs)


# ----- 7: the smaller ones ------------------------------------------------------------------------------


def test_runs_lists_past_a_malformed_status(tmp_path: Path) -> None:
    for name, status in (("a", "[1, 2]"), ("b", '{"status": '), ("c", '"x"')):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "config.yaml").write_text("seed: 0\n")
        (tmp_path / "runs" / name / "status.json").write_text(status)
    (tmp_path / "runs" / "c" / "metrics.csv").write_text("step,epoch,val/acc\nx,0,0.5\n")
    proc = run_cli("runs", "--root", str(tmp_path / "runs"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert all(name in proc.stdout for name in "abc")


def test_file_store_error_keeps_mlflows_fix(tmp_path: Path) -> None:
    proc = _train_cli(tmp_path, f"tracking.uri=file://{tmp_path / 'mlruns'}")
    assert proc.returncode == 2 and "MLFLOW_ALLOW_FILE_STORE" in _one_line(proc)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """(run dir, store URI, registered model name) of one tiny run, registered as version 1."""
    from clfops.training.train import train

    tmp = tmp_path_factory.mktemp("trained")
    store = f"sqlite:///{tmp / 'mlflow.db'}"
    base = [f"run.root={tmp / 'runs'}", f"tracking.uri={store}", "run.name=t", "tracking.register_as=safe"]
    summary = train(C.compose("train", [*base, *TINY]))
    return Path(summary["run_dir"]), store, "safe"


def test_a_manifest_with_the_wrong_mean_is_one_line(tmp_path: Path, trained: tuple[Path, str, str]) -> None:
    run_dir = tmp_path / "copy"
    shutil.copytree(trained[0] / "model", run_dir / "model")
    manifest = json.loads((run_dir / "model" / "manifest.json").read_text())
    (run_dir / "model" / "manifest.json").write_text(json.dumps(manifest | {"mean": [0.1, 0.2, 0.3, 0.4]}))
    image = SYSTEM_FMNIST  # any source: the manifest is read first
    proc = run_cli("predict", "--run-dir", str(run_dir), str(image), cwd=tmp_path)
    assert proc.returncode == 2 and "mean" in _one_line(proc)


def test_predict_on_an_empty_folder_says_so(tmp_path: Path, trained: tuple[Path, str, str]) -> None:
    (tmp_path / "empty").mkdir()
    proc = run_cli("predict", "--run-dir", str(trained[0]), str(tmp_path / "empty"), cwd=tmp_path)
    assert proc.returncode == 2 and "no images" in _one_line(proc)


def test_an_unknown_gate_metric_is_a_usage_error(tmp_path: Path, trained: tuple[Path, str, str]) -> None:
    _, store, name = trained
    args = ["promote", "--name", name, "--version", "1", "--alias", "staging", "--tracking-uri", store]
    proc = run_cli(*args, "--gate", "test/acuracy>=0.1", cwd=tmp_path)
    assert proc.returncode == 2 and "test/acuracy" in _one_line(proc) and "test/acc" in _one_line(proc)
    proc = run_cli(*args, "--gate", "test/acc>=0.0", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
