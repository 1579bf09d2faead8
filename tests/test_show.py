"""`clfops show REF`: where a model came from, against the local SQLite store and a `clfops server` on
PostgreSQL. A base run registered as NAME@staging, a fine-tune of it (model.init=models:/NAME@staging) and an
evaluation run on other data: `show` of the base names its version and alias, its child and its evaluation;
`show` of the child names its parent. An unknown reference is one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clfops import config as C
from clfops.tracking.registry import Registry
from clfops.training.train import train
from conftest import TINY, pg_database, run_cli
from test_server import PG_PORT, clfops_server

SECTIONS = ("what", "data", "code", "configuration", "who", "lineage")


def _family(tmp_path: Path, store: str) -> dict[str, dict]:
    common = [*TINY, f"run.root={tmp_path / 'runs'}", f"tracking.uri={store}", "augment=none"]
    base_args = [*common, "run.name=base", "tracking.register_as=shirts"]
    base = train(C.compose("train", base_args), base_args)
    Registry(store).set_alias("shirts", "staging", "1")
    child_args = [*common, "run.name=child", "model.init=models:/shirts@staging", "model.freeze=backbone"]
    child = train(C.compose("train", child_args), child_args)
    evaluation = run_cli(
        "evaluate", "--model-uri", "models:/shirts@staging", "--data", "val", "--log-mlflow",
        "--tracking-uri", store, "--out", str(tmp_path / "eval"), cwd=tmp_path,
    )  # fmt: skip
    assert evaluation.returncode == 0, evaluation.stderr[-2000:]
    return {"base": base, "child": child}


def _check(tmp_path: Path, store: str, family: dict[str, dict]) -> None:
    base, child = family["base"], family["child"]
    shown = run_cli("show", "models:/shirts@staging", "--json", "--tracking-uri", store, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr[-2000:]
    doc = json.loads(shown.stdout)
    assert set(SECTIONS) <= set(doc) and doc["run_id"] == base["run_id"]
    what = doc["what"]
    assert what["architecture"] == "quick_cnn" and what["parameters"] > 100_000 and len(what["classes"]) == 10
    assert what["image_size"] == [28, 28] and what["metrics"]["test/acc"] == pytest.approx(base["test_acc"])
    assert what["registered"] == [{"name": "shirts", "version": "1", "aliases": ["staging"]}]
    assert doc["data"]["name"] == "fashion_mnist" and doc["data"]["sizes"] == {"train": 480, "val": 120, "test": 2000}
    assert len(doc["data"]["sha256"]) == 64 and doc["data"]["source"]
    assert set(doc["code"]["versions"]) == {"clfops", "torch", "lightning", "mlflow", "python"}
    assert "run.name=base" in doc["configuration"]["overrides"]
    assert doc["who"]["status"] == "FINISHED" and doc["who"]["start"] and doc["who"]["duration_s"] > 0
    assert [c["run_id"] for c in doc["lineage"]["children"]] == [child["run_id"]]
    (evaluation,) = doc["lineage"]["evaluations"]
    assert "eval/acc" in evaluation["metrics"]

    text = run_cli("show", child["run_id"], "--tracking-uri", store, cwd=tmp_path)
    assert text.returncode == 0, text.stderr[-2000:]
    for heading in ("What", "Data", "Code", "Configuration", "Who, where, when", "Lineage"):
        assert f"\n{heading}\n" in text.stdout
    assert f"run_id={base['run_id']}" in text.stdout and "version=1" in text.stdout

    unknown = run_cli("show", "models:/shirts@nope", "--tracking-uri", store, cwd=tmp_path)
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1, unknown.stderr


@pytest.mark.slow
def test_show_on_the_local_store(tmp_path: Path, store: str) -> None:
    _check(tmp_path, store, _family(tmp_path, store))
    bogus = run_cli("show", "no-such-thing", "--tracking-uri", store, cwd=tmp_path)
    assert bogus.returncode == 2 and bogus.stderr.startswith("clfops: error: ") and "Traceback" not in bogus.stderr


@pytest.mark.postgres
def test_show_against_a_server_on_postgresql(tmp_path: Path) -> None:
    art = tmp_path / "artifacts"
    with pg_database() as db, clfops_server(
        tmp_path, "--backend-store-uri", f"postgresql://postgres@127.0.0.1:{PG_PORT}/{db}",
        "--artifacts-destination", str(art),
    ) as server:  # fmt: skip
        _check(tmp_path, server.url, _family(tmp_path, server.url))
