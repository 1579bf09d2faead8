"""`clfops compare`: a study of one override's values as nested MLflow runs, and a table of existing runs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from clfops import config as C
from clfops.tracking import PARENT_TAG, child_run_ids, client
from clfops.tuning import TuningError
from clfops.tuning.compare import parse_vary, run_study
from conftest import TINY, run_cli

PNG = b"\x89PNG\r\n\x1a\n"


def _table(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_study_nests_one_child_per_value_and_runs_table_agrees(tmp_path: Path, store: str, capsys) -> None:
    base = [f"run.root={tmp_path / 'runs'}", f"tracking.uri={store}", *TINY, "tracking.log_model=false"]
    out = tmp_path / "studies" / "aug"
    curves = run_study(base, "aug", "augment=none,basic", out)
    assert [c.label for c in curves] == ["augment=none", "augment=basic"]
    assert all(c.status == "FINISHED" and len(c.val_acc) == 1 and c.test_acc is not None for c in curves)

    c = client(store)
    children = [c.get_run(curve.run_id) for curve in curves]
    parent_id = children[0].data.tags[PARENT_TAG]
    assert all(run.data.tags[PARENT_TAG] == parent_id for run in children)
    assert [run.data.tags["clfops.study.value"] for run in children] == ["augment=none", "augment=basic"]
    assert child_run_ids(store, parent_id) == [curve.run_id for curve in curves]
    parent = c.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.info.run_name == "compare-aug"
    assert {a.path for a in c.list_artifacts(parent_id, "study")} >= {"study/comparison.csv", "study/comparison.png"}
    flips = [C.from_yaml(Path(run.data.tags["clfops.run_dir"]) / "config.yaml").augment.flip_p for run in children]
    assert flips == [0.0, 0.5]  # each child really trained with its value

    table = _table(out / "comparison.csv")
    assert [row["run_id"] for row in table] == [curve.run_id for curve in curves]
    assert all(float(row["best_val_acc"]) > 0 and row["overfit_gap"] and float(row["train_s"]) > 0 for row in table)
    assert (out / "comparison.png").read_bytes()[:8] == PNG
    assert "| augment=basic |" in (out / "comparison.md").read_text()
    lines = [line for line in capsys.readouterr().out.splitlines() if "best so far" in line]
    assert len(lines) == 2 and lines[1].startswith("[2/2] augment=basic")

    # The same table from MLflow histories: the parent id stands for its children.
    proc = run_cli("compare", "--runs", parent_id, "--tracking-uri", store, "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    again = _table(tmp_path / "r" / "comparison.csv")
    keys = ["run", "run_id", "best_val_acc", "final_val_acc", "overfit_gap", "train_s", "test_acc"]
    assert [{k: row[k] for k in keys} for row in again] == [{k: row[k] for k in keys} for row in table]


def test_vary_parsing_keeps_bracketed_values_and_refuses_a_single_value() -> None:
    assert parse_vary("scheduler=step,cosine") == ("scheduler", ["step", "cosine"])
    assert parse_vary("scheduler.milestones=[3,5],[4,8]") == ("scheduler.milestones", ["[3,5]", "[4,8]"])
    for bad in ("scheduler", "scheduler=step", "scheduler=step,step", "=a,b", "augment=none,"):
        with pytest.raises(TuningError, match="--vary"):
            parse_vary(bad)


def test_compare_cli_refuses_mixed_modes_in_one_line(tmp_path: Path) -> None:
    proc = run_cli("compare", "--runs", "abc", "--group", "g", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "clfops: error: compare: --runs builds a table of existing runs; leave out --group and --vary"
    ]
