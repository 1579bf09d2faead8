"""One model, four names: run id, run dir, checkpoint and models:/ URI give identical probabilities through
`clfops evaluate` and `clfops predict` (one resolver, one inference path)."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from clfops.cli import main as cli_main
from clfops.data.loader import make_splits
from clfops.data.sources import load_source
from clfops.errors import UserError
from clfops.evaluation.evaluate import EvalRequest, evaluate
from clfops.serving.resolve import ModelRef, resolve_model
from clfops.serving.saved_model import load_model
from clfops.tracking import client
from clfops.training.train import train
from test_model_logging import normalised


def _predict_cli(*args: str):
    """`clfops predict` in-process; the stderr handler the CLI installs on the "clfops" logger is removed after."""
    logger = logging.getLogger("clfops")
    handlers = list(logger.handlers)
    try:
        return CliRunner().invoke(cli_main, ["predict", *args])
    finally:
        logger.handlers[:] = handlers


def _write_idx(path: Path, images: np.ndarray) -> None:
    """uint8 (N, H, W) as a gzipped IDX file."""
    header = bytes([0, 0, 0x08, 3]) + b"".join(int(d).to_bytes(4, "big") for d in images.shape)
    path.write_bytes(gzip.compress(header + images.astype(np.uint8).tobytes()))


def test_every_reference_gives_identical_probabilities(
    compose, store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # MLflow keeps a SQLite store's artifacts in ./mlruns
    cfg = compose("run.name=refs")
    summary = train(cfg)
    run_dir = Path(summary["run_dir"])
    refs = {
        "run_id": summary["run_id"],
        "run_dir": str(run_dir),
        "checkpoint": str(run_dir / "checkpoints" / "best.ckpt"),
        "model_uri": summary["model_uri"],
    }
    assert refs["model_uri"].startswith("models:/m-")
    for kind, text in refs.items():  # one string: its kind is guessed
        assert ModelRef.guess(text) == ModelRef(kind, text)  # type: ignore[arg-type]

    # The validation images, as `--data val` reads them and as an IDX file for `predict`.
    source = load_source(cfg.data.name, None)
    val = make_splits(source, cfg.data.val_fraction, cfg.seed, cfg.data.train_limit).val
    idx = tmp_path / "val-images-idx3-ubyte.gz"
    _write_idx(idx, val.x[:, 0].numpy())
    classes = summary["classes"]

    evaluated, predicted = {}, {}
    for kind, text in refs.items():
        request = EvalRequest(data="val", out=tmp_path / f"eval-{kind}", tracking_uri=store, precision="32-true")
        setattr(request, kind, Path(text) if kind in ("run_dir", "checkpoint") else text)
        result = evaluate(request)
        assert result.probabilities is not None and result.report["images"] == len(val) == 120
        evaluated[kind] = result.probabilities
        out = tmp_path / f"predict-{kind}.json"
        args = [str(idx), f"--{kind.replace('_', '-')}", text, "--tracking-uri", store]
        proc = _predict_cli(*args, "--top-k", str(len(classes)), "--out", str(out))
        assert proc.exit_code == 0, (proc.output, proc.exception)
        rows = json.loads(out.read_text())["predictions"]
        assert [r["file"] for r in rows] == [f"{idx}[{i}]" for i in range(len(val))]
        probs = np.zeros((len(rows), len(classes)))
        for i, row in enumerate(rows):
            for entry in row["top_k"]:
                probs[i, classes.index(entry["class"])] = entry["probability"]
        predicted[kind] = probs

    reference = evaluated["run_dir"]
    for kind in refs:  # bit for bit: same weights, same manifest, same inference path
        assert np.array_equal(evaluated[kind], reference), kind
        assert np.array_equal(predicted[kind], reference), kind
    # ... and what the model computes when its manifest's recipe is written out by hand.
    net, manifest = load_model(run_dir / "model")
    with torch.inference_mode():
        x = normalised(val.x, manifest)
        logits = net(x)
        if manifest.test_flip:
            logits = (logits + net(torch.flip(x, dims=[3]))) / 2
    assert manifest.temperature != 1.0  # fitted on the validation split (model.calibrate, the default)
    logits = logits / manifest.temperature
    assert np.allclose(torch.softmax(logits.double(), 1).numpy(), reference, atol=1e-5)


def test_unknown_references_are_one_line_errors(tmp_path: Path, store: str) -> None:
    (tmp_path / "empty-run").mkdir()
    cases = {
        str(tmp_path / "gone.ckpt"): "no such checkpoint",
        str(tmp_path / "empty-run"): "no model/manifest.json",
        "models:/nothing@here": "nothing",
    }
    client(store)  # an existing, empty store: the model URI is looked up and not found
    for text, words in cases.items():
        with pytest.raises(UserError) as err:
            resolve_model(text, store)
        assert words in str(err.value) and len(str(err.value).splitlines()) == 1, str(err.value)
    with pytest.raises(UserError, match="exactly one of --run-dir, --checkpoint, --run-id, --model-uri"):
        ModelRef.from_options(str(tmp_path), None, "abc", None)
