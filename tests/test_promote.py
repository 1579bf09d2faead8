"""Registry + promotion gates: versions, tags and aliases read back through MlflowClient, CLI exit codes 0/1/2."""

from __future__ import annotations

import uuid
from typing import Any

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from clfops.registry.promote import PromotionError, parse_gate, promote
from clfops.registry.register import register
from conftest import run_cli
from test_model_logging import reference_predictions, sample_images
from test_predict import invoke

# MlflowClient.create_model_version(models:/ID) reads the global tracking URI: the shared run's store
pytestmark = pytest.mark.usefixtures("shared_run_store")


@pytest.fixture
def name() -> str:
    return f"promo-{uuid.uuid4().hex[:8]}"  # the shared store: every test its own registered model


def version_with(shared_run: dict[str, Any], name: str, metrics: dict[str, float]) -> str:
    """A version of `name` (the shared logged model) whose run carries exactly `metrics`."""
    c = MlflowClient(shared_run["store"])
    exp_id = c.get_run(shared_run["run_id"]).info.experiment_id
    other = c.create_run(exp_id, run_name="metrics-only").info.run_id
    for key, value in metrics.items():
        c.log_metric(other, key, value)
    c.set_terminated(other)
    if not c.search_registered_models(f"name = '{name}'"):
        c.create_registered_model(name)
    return str(c.create_model_version(name, shared_run["model_uri"], run_id=other).version)


def aliases(shared_run: dict[str, Any], name: str) -> dict[str, str]:
    return {alias: str(v) for alias, v in MlflowClient(shared_run["store"]).get_registered_model(name).aliases.items()}


def tags(shared_run: dict[str, Any], name: str, version: str) -> dict[str, str]:
    return MlflowClient(shared_run["store"]).get_model_version(name, version).tags


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("eval/accuracy>=0.90", ("eval/accuracy", ">=", 0.9)),
        (" test/loss < 1e-1 ", ("test/loss", "<", 0.1)),
        ("eval/f1/T-shirt_top==1", ("eval/f1/T-shirt_top", "==", 1.0)),
    ],
)
def test_parse_gate(text: str, expected: tuple[str, str, float]) -> None:
    gate = parse_gate(text)
    assert (gate.metric, gate.op, gate.threshold) == expected


@pytest.mark.parametrize("text", ["accuracy", "eval/accuracy=>0.9", "eval/accuracy>=high", ">=0.9"])
def test_bad_gates_are_usage_errors(text: str) -> None:
    with pytest.raises(PromotionError, match="expected METRIC"):
        parse_gate(text)


@pytest.mark.slow
def test_register_tags_the_version_and_cli_lists_it(shared_run: dict[str, Any], name: str) -> None:
    proc = run_cli(
        "register", "--run-id", shared_run["run_id"], "--name", name, env={"MLFLOW_TRACKING_URI": shared_run["store"]}
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    c = MlflowClient(shared_run["store"])
    (mv,) = c.search_model_versions(f"name = '{name}'")
    assert mv.run_id == shared_run["run_id"] and mv.source == shared_run["model_uri"]
    assert float(mv.tags["test_acc"]) == pytest.approx(shared_run["test_acc"], abs=1e-6)
    assert mv.tags["data_sha256"] == shared_run["data_sha256"]
    assert mv.tags["clfops.run_dir"] == shared_run["run_dir"]
    result = invoke("models", name, "--tracking-uri", shared_run["store"])
    assert result.exit_code == 0, result.output
    assert f"registered model {name}" in result.stdout and shared_run["run_id"][:8] in result.stdout


@pytest.mark.slow
def test_gate_falls_back_to_test_metrics_when_eval_is_missing(shared_run: dict[str, Any], name: str) -> None:
    version = version_with(shared_run, name, {"test/acc": 0.95})  # e.g. a run synced from an older clfops
    staged = promote(shared_run["store"], name, "staging", version=version, gates=["eval/accuracy>=0.90"])
    assert staged.promoted and "from test/acc" in tags(shared_run, name, version)["promotion.staging.reason"]


@pytest.mark.slow
def test_gates_on_a_run_logged_before_the_metric_vocabulary(shared_run: dict[str, Any], name: str) -> None:
    # An older clfops logged eval/* beside test/* at the end of training, under other names.
    old = {"eval/accuracy": 0.91, "eval/top1_accuracy": 0.91, "eval/macro_f1": 0.9, "eval/ece": 0.02}
    version = version_with(shared_run, name, old | {"test/acc": 0.91})
    gates = ["eval/accuracy>=0.9", "eval/acc>=0.9", "test/f1>=0.89", "test/ece<=0.05", "eval/top1_accuracy>0.9"]
    decision = promote(shared_run["store"], name, "staging", version=version, gates=gates)
    assert decision.promoted, decision.reason
    reason = tags(shared_run, name, version)["promotion.staging.reason"]
    assert "eval/accuracy=0.9100 >= 0.9" in reason and "test/f1=0.9000 >= 0.89 (from eval/f1" in reason
    assert "test/ece=0.0200 <= 0.05 (from eval/ece" in reason
    failed = promote(
        shared_run["store"], name, "production", version=version, gates=["eval/macro_f1>=0.95"], force=True
    )
    assert not failed.promoted and "eval/macro_f1=0.9000 >= 0.95" in failed.reason


@pytest.mark.slow
def test_gate_passes_then_production_needs_staging(shared_run: dict[str, Any], name: str) -> None:
    v1 = str(register(shared_run["store"], shared_run["run_id"], name).version)
    gate = f"eval/accuracy>={shared_run['test_acc'] - 0.01:.4f}"  # an old name; test/acc stands in for eval/acc
    staged = promote(shared_run["store"], name, "staging", version=v1, gates=[gate])
    assert staged.promoted and aliases(shared_run, name) == {"staging": v1}
    assert tags(shared_run, name, v1)["promotion.staging"] == "passed"
    assert "eval/accuracy=" in tags(shared_run, name, v1)["promotion.staging.reason"]
    v2 = str(register(shared_run["store"], shared_run["run_id"], name).version)
    refused = promote(shared_run["store"], name, "production", run_id=shared_run["run_id"], gates=[gate])  # latest: v2
    assert refused.version == v2 and not refused.promoted and "does not hold staging" in refused.reason
    assert (
        aliases(shared_run, name) == {"staging": v1} and tags(shared_run, name, v2)["promotion.production"] == "failed"
    )
    forced = promote(shared_run["store"], name, "production", version=v2, gates=[gate], force=True)
    assert forced.promoted and aliases(shared_run, name) == {"staging": v1, "production": v2}
    assert tags(shared_run, name, v2)["promotion.production.forced"] == "true"


@pytest.mark.slow
def test_failing_or_missing_metric_keeps_the_alias(shared_run: dict[str, Any], name: str) -> None:
    good = version_with(shared_run, name, {"eval/accuracy": 0.93, "test/acc": 0.50})
    assert promote(shared_run["store"], name, "staging", version=good, gates=["eval/accuracy>=0.9"]).promoted
    bad = version_with(shared_run, name, {"eval/accuracy": 0.85})
    failed = promote(shared_run["store"], name, "staging", version=bad, gates=["eval/accuracy>=0.9", "eval/ece<=0.1"])
    assert not failed.promoted and aliases(shared_run, name) == {"staging": good}
    reason = tags(shared_run, name, bad)["promotion.staging.reason"]
    assert "eval/accuracy=0.8500 >= 0.9" in reason and "eval/ece not logged" in reason
    assert "clfops evaluate --run-id" in reason  # says what to run


@pytest.mark.slow
def test_compare_to_production_must_beat_it(shared_run: dict[str, Any], name: str) -> None:
    prod = version_with(shared_run, name, {"eval/accuracy": 0.90, "eval/log_loss": 0.30})
    promote(shared_run["store"], name, "staging", version=prod)
    assert promote(shared_run["store"], name, "production", version=prod, compare_to="production").promoted
    worse = version_with(shared_run, name, {"eval/accuracy": 0.95, "eval/log_loss": 0.40})
    promote(shared_run["store"], name, "staging", version=worse)
    gates = ["eval/accuracy>=0.9", "eval/log_loss<=0.5"]  # passes both gates, but a higher loss than production
    decision = promote(shared_run["store"], name, "production", version=worse, gates=gates, compare_to="production")
    assert not decision.promoted and aliases(shared_run, name)["production"] == prod
    assert "eval/log_loss=0.4000 vs production" in decision.reason  # the gate's own (old) spelling
    better = version_with(shared_run, name, {"eval/accuracy": 0.96, "eval/log_loss": 0.20})
    promote(shared_run["store"], name, "staging", version=better)
    decision = promote(shared_run["store"], name, "production", version=better, gates=gates, compare_to="production")
    assert decision.promoted and decision.previous == prod
    assert aliases(shared_run, name) == {"staging": better, "production": better}


@pytest.mark.slow
def test_cli_exit_codes(shared_run: dict[str, Any], name: str) -> None:
    version = version_with(shared_run, name, {"eval/accuracy": 0.8})
    base = ["promote", "--name", name, "--tracking-uri", shared_run["store"], "--alias", "staging"]
    passed = invoke(*base, "--version", version, "--gate", "eval/accuracy>=0.75")
    assert passed.exit_code == 0 and f"promoted {name} v{version} -> @staging" in passed.stdout
    failed = invoke(*base, "--version", version, "--gate", "eval/accuracy>=0.9")
    assert failed.exit_code == 1 and "not promoted" in failed.stderr
    for args in (
        ["--version", version, "--gate", "accuracy"],  # bad gate grammar
        ["--version", version, "--run-id", shared_run["run_id"]],  # both
        ["--version", "99"],  # no such version
    ):
        usage = invoke(*base, *args)
        assert usage.exit_code == 2, usage.output
        assert usage.stderr.startswith("clfops: error:") and len(usage.stderr.strip().splitlines()) == 1
    for alias, reason in (("bad alias", "Names may only contain alphanumerics"), ("latest", "is reserved")):
        refused = invoke(*base[:-1], alias, "--version", version)  # MLflow's own reason, before anything changes
        assert refused.exit_code == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.output
        assert refused.stderr.startswith(f"clfops: error: --alias {alias}:") and reason in refused.stderr
    bad_compare = invoke(*base, "--version", version, "--compare-to", "no/such")
    assert bad_compare.exit_code == 2 and "--compare-to no/such: Invalid alias name" in bad_compare.stderr
    assert aliases(shared_run, name) == {"staging": version}


def test_any_alias_champion_challenger(shared_run: dict[str, Any], name: str) -> None:
    champ = version_with(shared_run, name, {"eval/accuracy": 0.90})
    challenger = version_with(shared_run, name, {"eval/accuracy": 0.85})
    base = ["promote", "--name", name, "--tracking-uri", shared_run["store"]]
    assert invoke(*base, "--alias", "champion", "--version", champ, "--gate", "eval/accuracy>=0.8").exit_code == 0
    assert invoke(*base, "--alias", "challenger", "--version", challenger).exit_code == 0
    # The challenger must beat the champion to take its alias: it does not.
    gate = ["--gate", "eval/accuracy>=0.8", "--compare-to", "champion"]
    refused = invoke(*base, "--alias", "champion", "--version", challenger, *gate)
    assert refused.exit_code == 1 and f"vs champion v{champ}" in refused.stdout
    assert aliases(shared_run, name) == {"champion": champ, "challenger": challenger}
    assert tags(shared_run, name, challenger)["promotion.champion"] == "failed"
    assert tags(shared_run, name, challenger)["promotion.challenger"] == "passed"
    listed = invoke("models", name, "--tracking-uri", shared_run["store"])
    assert listed.exit_code == 0, listed.output
    rows = {line.split("│")[1].strip(): line for line in listed.stdout.splitlines() if line.count("│") > 3}
    assert "champion" in rows[champ] and "challenger" in rows[challenger], listed.stdout
    assert "challenger:passed" in rows[challenger] and "champion:failed" in rows[challenger], listed.stdout


@pytest.mark.slow
def test_register_logs_the_model_of_a_run_that_logged_none(shared_run: dict[str, Any], name: str) -> None:
    c = MlflowClient(shared_run["store"])
    exp_id = c.get_run(shared_run["run_id"]).info.experiment_id
    bare = c.create_run(
        exp_id, tags={"clfops.run_dir": shared_run["run_dir"]}
    ).info.run_id  # as tracking.log_model=false
    c.log_metric(bare, "test/acc", 0.5)
    version = register(shared_run["store"], bare, name)
    assert version.run_id == bare and version.tags["test_acc"] == "0.500000"
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version.version}")
    assert list(model.predict(sample_images(4))["class"]) == [
        shared_run["classes"][i] for i in reference_predictions(shared_run["model_dir"], sample_images(4))
    ]
    c.delete_tag(bare, "clfops.run_dir")
    with pytest.raises(PromotionError, match="logged no model"):
        register(shared_run["store"], c.create_run(exp_id).info.run_id, name)
