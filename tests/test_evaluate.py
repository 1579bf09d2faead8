"""`clfops evaluate`: metrics against hand-computed answers, every way to name a model, the files, MLflow
logging read back, one-line errors, and report.html rendered in headless Chromium.

One tiny model is trained per module (600 Fashion-MNIST images, 1 epoch). Most evaluations use its `val`
split (120 images) to stay fast; the CLI run evaluates the run's test split (data.test_limit images) once.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from PIL import Image

from clfops import config as C
from clfops.cli import main as cli_main
from clfops.evaluation.evaluate import EvalRequest, EvaluateError, evaluate
from clfops.evaluation.metrics import (
    confusion,
    evaluate_predictions,
    most_confused,
    prediction_arrays,
    report_metrics,
)
from clfops.serving.inference import predict_logits
from clfops.serving.resolve import resolve_model
from clfops.serving.saved_model import load_model
from clfops.training.train import train
from conftest import TINY, run_cli

OUTPUTS = (
    "classification_report.json",
    "confusion_matrix.png",
    "confusion_matrix.csv",
    "misclassified_examples.png",
    "most_confused.csv",
    "confidence.png",
    "per_class.png",
    "report.html",
)

# ---- hand-made example: 4 classes, 8 images; every answer below is worked out by hand -------------------------
PROBS = [
    [0.72, 0.10, 0.10, 0.08],  # true a, predicted a (conf .72)
    [0.12, 0.68, 0.15, 0.05],  # true a, predicted b (.68); a is 3rd -> inside top-3
    [0.10, 0.82, 0.05, 0.03],  # true b, predicted b (.82)
    [0.20, 0.52, 0.18, 0.10],  # true b, predicted b (.52)
    [0.42, 0.30, 0.03, 0.25],  # true c, predicted a (.42); c is 4th -> outside top-3
    [0.03, 0.03, 0.92, 0.02],  # true c, predicted c (.92)
    [0.10, 0.10, 0.08, 0.72],  # true d, predicted d (.72)
    [0.10, 0.37, 0.23, 0.30],  # true d, predicted b (.37); d is 2nd -> inside top-3
]
TARGETS = [0, 0, 1, 1, 2, 2, 3, 3]


def test_metrics_match_hand_computed_answers() -> None:
    logits = torch.tensor(PROBS).log()  # softmax(log p) = p
    report = evaluate_predictions(logits, torch.tensor(TARGETS), ["a", "b", "c", "d"])
    approx = pytest.approx
    # predictions a b b b a c d b: class a TP1 FP1 FN1; b TP2 FP2; c TP1 FN1; d TP1 FN1
    expected = {"a": (0.5, 0.5, 0.5), "b": (0.5, 1.0, 2 / 3), "c": (1.0, 0.5, 2 / 3), "d": (1.0, 0.5, 2 / 3)}
    for name, (p, r, f1) in expected.items():
        entry = report["per_class"][name]
        assert (entry["precision"], entry["recall"], entry["f1"], entry["support"]) == approx((p, r, f1, 2))
    assert report["accuracy"] == approx(5 / 8) and report["top1_accuracy"] == approx(5 / 8)
    assert report["top3_accuracy"] == approx(7 / 8)
    assert report["top5_accuracy"] == 1.0  # k >= number of classes
    assert report["macro_avg"]["precision"] == approx(0.75) and report["macro_avg"]["recall"] == approx(0.625)
    assert report["macro_avg"]["f1"] == approx(0.625) and report["weighted_avg"]["f1"] == approx(0.625)
    p_true = [0.72, 0.12, 0.82, 0.52, 0.03, 0.92, 0.72, 0.30]
    assert report["log_loss"] == approx(-sum(math.log(p) for p in p_true) / 8, rel=1e-6)
    # 15 bins of width 1/15: bin [10/15, 11/15) holds .72 (right), .72 (right) and .68 (wrong): accuracy 2/3,
    # confidence 2.12/3; every other image is alone in its bin (|correct - confidence| / 8 each).
    # (With 10 bins .68 and .72 would part and the answer would be 2.77 / 8.)
    assert report["ece_bins"] == 15
    assert report["ece"] == approx((0.18 + 0.48 + 0.42 + 0.08 + 0.37) / 8 + 3 / 8 * abs(2 / 3 - 2.12 / 3), abs=1e-6)
    metrics = report_metrics(report, "eval/")
    assert metrics["eval/acc"] == approx(5 / 8) and metrics["eval/f1"] == approx(0.625)
    assert metrics["eval/f1/b"] == approx(2 / 3) and metrics["eval/top3_acc"] == approx(7 / 8)
    assert "eval/weighted_recall" not in metrics  # = accuracy: one name per quantity
    arrays = prediction_arrays(logits, torch.tensor(TARGETS))
    pairs = most_confused(confusion(arrays, 4), ["a", "b", "c", "d"])
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [("a", "b", 1), ("c", "a", 1), ("d", "b", 1)]


# ---- one tiny trained model for the module ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("evaluate")
    store = f"sqlite:///{root / 'mlflow.db'}"
    cwd = Path.cwd()
    os.chdir(root)  # MLflow puts a local store's artifacts in ./mlruns of the creating process
    try:
        cfg = C.compose("train", [f"run.root={root / 'runs'}", f"tracking.uri={store}", "run.name=tiny", *TINY])
        summary = train(cfg, [])
    finally:
        os.chdir(cwd)
    return {**summary, "root": root, "store": store}


def _report(out: Path) -> dict:
    return json.loads((out / "classification_report.json").read_text())


@pytest.mark.slow
def test_run_dir_and_checkpoint_give_identical_numbers(trained: dict, tmp_path: Path) -> None:
    a = evaluate(EvalRequest(run_dir=Path(trained["run_dir"]), data="val", out=tmp_path / "a"))
    b = evaluate(EvalRequest(checkpoint=Path(trained["best_checkpoint"]), data="val", out=tmp_path / "b"))
    assert a.report == b.report and a.metrics == b.metrics
    assert a.report["images"] == 120  # the seeded 20 % of 600 images, recomputed from config.yaml
    for name in OUTPUTS:
        assert (tmp_path / "a" / name).stat().st_size > 0, name
    assert not (tmp_path / "a" / "predictions.csv").exists()  # only with --save-predictions
    rows = list(csv.reader((tmp_path / "a" / "confusion_matrix.csv").open()))
    assert rows[0][1:] == trained["classes"] and sum(int(v) for row in rows[1:] for v in row[1:]) == 120


@pytest.mark.slow
def test_run_id_and_model_uri(trained: dict, tmp_path: Path) -> None:
    store, run_id = trained["store"], trained["run_id"]
    reference = evaluate(EvalRequest(run_dir=Path(trained["run_dir"]), data="val", out=tmp_path / "ref")).report
    by_id = evaluate(EvalRequest(run_id=run_id, tracking_uri=store, data="val", out=tmp_path / "id"))
    assert by_id.report == reference
    # A registered model version whose artifacts hold the clfops model folder one level down (as pyfunc does).
    client = MlflowClient(store)
    client.log_artifacts(run_id, str(Path(trained["model_dir"])), "test_model/artifacts")
    client.create_registered_model("tiny-eval")
    version = client.create_model_version("tiny-eval", f"runs:/{run_id}/test_model", run_id=run_id)
    client.set_registered_model_alias("tiny-eval", "champion", version.version)
    uris = [f"models:/tiny-eval/{version.version}", f"runs:/{run_id}/test_model"]
    if trained.get("model_uri"):  # the pyfunc model `train` logs (tracking.log_model=true), a models:/m-… URI
        uris += [trained["model_uri"], f"runs:/{run_id}/model"]
    weights = load_model(Path(trained["model_dir"]))[0].state_dict()
    for uri in uris:  # each resolves to the same weights, the same run and its training config
        source = resolve_model(uri, store)
        assert source.run_id == run_id and source.config is not None, uri
        assert all(torch.equal(v, source.net.state_dict()[k]) for k, v in weights.items()), uri
    # --log-mlflow on data other than the run's own test split: a new run linked to the source run.
    linked = evaluate(
        EvalRequest(model_uri="models:/tiny-eval@champion", tracking_uri=store, data="val", log_mlflow=True)
    )
    assert linked.report == reference
    run = client.get_run(linked.mlflow_run_id)
    assert linked.mlflow_run_id != run_id and run.info.status == "FINISHED"
    assert run.data.tags["clfops.source_run_id"] == run_id and run.data.tags["mlflow.parentRunId"] == run_id
    assert run.data.metrics["eval/acc"] == pytest.approx(reference["accuracy"])
    assert {a.path for a in client.list_artifacts(linked.mlflow_run_id, "eval")} >= {"eval/report.html"}
    assert linked.out_dir == Path(trained["run_dir"]) / "eval-val"  # the source run's dir, named by the data


@pytest.fixture(scope="module")
def cli_eval(trained: dict) -> tuple[subprocess.CompletedProcess, Path]:
    """`clfops evaluate --run-dir … --log-mlflow --save-predictions` as a real subprocess, on the 10k test split."""
    out = Path(trained["root"]) / "cli-eval"
    proc = run_cli(
        "evaluate",
        "--run-dir",
        trained["run_dir"],
        "--out",
        str(out),
        "--log-mlflow",
        "--save-predictions",
        "--top-k-grid",
        "9",
        "--precision",
        "32-true",
        cwd=Path(trained["root"]),
    )  # fmt: skip  (the run trained and tested in fp32: TINY's trainer.precision)
    return proc, out


@pytest.mark.slow
def test_cli_writes_every_file_and_logs_back_to_the_run(trained: dict, cli_eval) -> None:
    proc, out = cli_eval
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "accuracy" in proc.stdout and "report.html" in proc.stdout
    for name in (*OUTPUTS, "predictions.csv"):
        assert (out / name).stat().st_size > 0, name
    report = _report(out)
    assert report["precision"] == "32-true"  # --precision auto: the run's own (TINY trains and tests in fp32)
    assert report["device"] == "cpu"  # `clfops evaluate` serves on the CPU, wherever the model trained
    # Same weights, same preprocessing, same test images (the run's data.test_limit) as at the end of training.
    n = trained["images"]["test"]
    assert report["images"] == n
    assert report["accuracy"] == pytest.approx(trained["test_acc"], abs=1e-6)
    assert report["macro_avg"]["f1"] == pytest.approx(trained["test_f1"], abs=1e-4)
    preds = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(preds) == n and set(preds[0]) == {"index", "true", "predicted", "confidence"}
    assert sum(p["true"] == p["predicted"] for p in preds) / n == pytest.approx(report["accuracy"])
    client = MlflowClient(trained["store"])
    metrics = client.get_run(trained["run_id"]).data.metrics
    for key, value in report_metrics(report, "eval/").items():
        assert metrics[key] == pytest.approx(value), key
    logged = {a.path for a in client.list_artifacts(trained["run_id"], "eval")}
    assert {f"eval/{name}" for name in OUTPUTS} <= logged


@pytest.mark.slow
@pytest.mark.browser
def test_report_html_renders_in_chromium(cli_eval, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium is not None, "Debian chromium is not installed (`make test` installs it as root)"
    proc, out = cli_eval
    assert proc.returncode == 0, proc.stderr[-2000:]
    page = (out / "report.html").read_text()
    assert 'id="summary"' in page and "data:image/png;base64," in page and "<script" not in page
    assert "http://" not in page and "https://" not in page  # self-contained: nothing to fetch
    shot = tmp_path / "shot.png"
    args = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
        f"--screenshot={shot}", "--window-size=1200,2000", (out / "report.html").resolve().as_uri(),
    ]  # fmt: skip
    run = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    log = run.stdout + run.stderr
    assert shot.is_file() and shot.stat().st_size > 10_000, log[-2000:]
    assert "Uncaught" not in log and "ERROR:CONSOLE" not in log, log[-2000:]
    img = np.asarray(Image.open(shot).convert("L"))
    assert img.shape == (2000, 1200) and img.std() > 10  # not one colour
    top = img[:700]  # cards + summary table: dark text on a light page in the first screen
    assert (top < 100).mean() > 0.005 and (top > 200).mean() > 0.5


def _invoke(*args: str):
    """The real click command in-process (no interpreter start per case); the stderr log handler the CLI
    installs on the "clfops" logger points at the runner's temporary stream, so it is removed afterwards."""
    logger = logging.getLogger("clfops")
    handlers = list(logger.handlers)
    try:
        return CliRunner().invoke(cli_main, ["evaluate", *args])
    finally:
        logger.handlers[:] = handlers


def _one_line_error(result, *words: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clfops: error:"), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.mark.slow
def test_cli_errors_are_one_line_exit_2(trained: dict, tmp_path: Path) -> None:
    store = trained["store"]
    _one_line_error(_invoke("--run-id", "0123456789abcdef", "--tracking-uri", store), "0123456789abcdef")
    _one_line_error(_invoke("--checkpoint", str(tmp_path / "nope.ckpt")), "nope.ckpt")
    _one_line_error(_invoke("--model-uri", "models:/no-such-model@prod", "--tracking-uri", store), "no-such-model")
    _one_line_error(_invoke("--run-dir", str(tmp_path / "missing")), "missing")
    _one_line_error(_invoke(), "exactly one")
    other = tmp_path / "other"  # a folder whose classes are not the model's
    for name in ("cat", "dog"):
        (other / name).mkdir(parents=True)
        Image.fromarray(np.zeros((28, 28), np.uint8)).save(other / name / "0.png")
    _one_line_error(_invoke("--run-dir", trained["run_dir"], "--data", str(other)), "classes differ", "cat")
    _one_line_error(_invoke("--run-dir", trained["run_dir"], "--data", str(tmp_path / "nowhere")), "nowhere")


@pytest.mark.slow
def test_image_folder_with_the_model_classes(trained: dict, tmp_path: Path) -> None:
    """A folder of real test images (class folders spelled as folders can: T-shirt/top -> T-shirt_top)
    gives the same predictions as the same images read from the data set."""
    from clfops.data.sources import load_source

    test = load_source("fashion_mnist", None).test
    folder = tmp_path / "images"
    picked = []
    for label, name in enumerate(trained["classes"]):
        (folder / name.replace("/", "_")).mkdir(parents=True)
        for i in torch.nonzero(test.y == label).flatten()[:3].tolist():
            Image.fromarray(test.x[i, 0].numpy()).save(folder / name.replace("/", "_") / f"{i}.png")
            picked.append(i)
    result = evaluate(EvalRequest(run_dir=Path(trained["run_dir"]), data=str(folder), out=tmp_path / "out"))
    assert result.report["images"] == 30
    assert all(entry["support"] == 3 for entry in result.report["per_class"].values())
    net, manifest = load_model(Path(trained["model_dir"]))
    expected = (predict_logits(net, manifest, test.x[picked]).argmax(1) == test.y[picked]).float().mean()
    assert result.report["accuracy"] == pytest.approx(float(expected))


@pytest.mark.slow
def test_a_bf16_run_is_tested_in_bf16_and_evaluate_reproduces_it(tmp_path: Path) -> None:
    """Validation runs under Lightning's bf16 autocast; the run's test report does too, and `clfops evaluate`
    at the same precision gives the same numbers (fp32 may differ on near-tied images)."""
    overrides = [f"run.root={tmp_path}", "run.name=b", "tracking.enabled=false", *TINY, "trainer.precision=bf16-mixed"]
    summary = train(C.compose("train", overrides), [])
    report = _report(Path(summary["run_dir"]) / "eval")
    assert report["precision"] == "bf16-mixed" and report["accuracy"] == summary["test_acc"]
    again = evaluate(EvalRequest(run_dir=Path(summary["run_dir"]), out=tmp_path / "again", precision="bf16-mixed"))
    assert again.report["accuracy"] == summary["test_acc"] and again.report["log_loss"] == report["log_loss"]
    fp32 = evaluate(EvalRequest(run_dir=Path(summary["run_dir"]), out=tmp_path / "fp32", precision="32-true"))
    assert fp32.report["precision"] == "32-true" and abs(fp32.report["accuracy"] - summary["test_acc"]) < 0.01
    with pytest.raises(EvaluateError, match="--precision 16-mixed"):
        evaluate(EvalRequest(run_dir=Path(summary["run_dir"]), precision="16-mixed"))
