"""`clfops predict`: files, folders and IDX files through every model source, same answers as the in-memory net."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from clfops.serving.predict import PredictError, expand_sources, predict_sources
from clfops.serving.resolve import ModelRef, ModelRefError, resolve_model
from clfops.serving.saved_model import load_model
from conftest import run_cli
from test_model_logging import reference_predictions, sample_images

N_PNG = 24


def write_idx(path: Path, images: np.ndarray) -> None:
    """uint8 (N, H, W) as an IDX file (gzipped when the name ends in .gz)."""
    header = bytes([0, 0, 0x08, 3]) + b"".join(int(d).to_bytes(4, "big") for d in images.shape)
    data = header + images.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A folder of grey PNGs (one nested), an RGBA PNG, a broken file and a gzipped IDX file."""
    root = tmp_path_factory.mktemp("predict-inputs")
    images = sample_images(N_PNG + 40)
    folder = root / "pngs"
    (folder / "nested").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    for i in range(N_PNG):
        where = folder / "nested" if i % 4 == 0 else folder
        Image.fromarray(images[i, 0]).save(where / f"img{i:03d}.png")
    Image.fromarray(images[0, 0]).save(folder / ".hidden" / "skipped.png")  # dot-folders are not inputs
    rgba = np.dstack([np.repeat(images[0, 0][..., None], 3, axis=2), np.full((28, 28), 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(root / "rgba.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    write_idx(root / "extra-images-idx3-ubyte.gz", images[N_PNG:, 0])
    return {"root": root, "folder": folder, "images": images}


@pytest.mark.slow
def test_folder_and_idx_predictions_match_the_in_memory_net(shared_run: dict[str, Any], inputs: dict[str, Any]) -> None:
    net, manifest = load_model(Path(shared_run["model_dir"]))
    assert manifest.test_flip  # the default recipe: predictions average each image with its mirror image
    idx = inputs["root"] / "extra-images-idx3-ubyte.gz"
    pred = predict_sources(net, manifest, [str(inputs["folder"]), str(idx)], batch_size=7)
    assert len(pred.names) == N_PNG + 40 and not pred.failed
    assert pred.names[-1] == f"{idx}[39]"
    by_name = dict(zip(pred.names, pred.probs.argmax(1), strict=True))
    expected = reference_predictions(shared_run["model_dir"], inputs["images"])
    for i in range(N_PNG):
        where = inputs["folder"] / "nested" if i % 4 == 0 else inputs["folder"]
        assert by_name[str(where / f"img{i:03d}.png")] == expected[i]
    assert [by_name[f"{idx}[{j}]"] for j in range(40)] == list(expected[N_PNG:])
    assert np.allclose(pred.probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_every_model_source_gives_the_same_answer(shared_run: dict[str, Any], inputs: dict[str, Any]) -> None:
    sources = [str(inputs["folder"])]
    ckpt = Path(shared_run["best_checkpoint"])
    results = []
    for kwargs in (
        {"run_dir": shared_run["run_dir"]},
        {"checkpoint": str(ckpt)},
        {"run_id": shared_run["run_id"]},
        {"model_uri": shared_run["model_uri"]},
    ):
        args = {"model_uri": None, "run_id": None, "checkpoint": None, "run_dir": None, **kwargs}
        model = resolve_model(ModelRef.from_options(**args), shared_run["store"])
        results.append(predict_sources(model.net, model.manifest, sources).probs)
    for other in results[1:]:
        assert np.allclose(results[0], other, atol=1e-6)
    with pytest.raises(ModelRefError, match="exactly one"):
        ModelRef.from_options(None, None, None, None)


def test_expand_sources_rules(inputs: dict[str, Any]) -> None:
    entries = expand_sources([str(inputs["folder"]), str(inputs["root"] / "extra-images-idx3-ubyte.gz")])
    assert [kind for kind, _ in entries].count("image") == N_PNG and entries[-1][0] == "idx"
    assert not [p for _, p in entries if ".hidden" in p.parts]
    with pytest.raises(PredictError, match="no such file"):
        expand_sources([str(inputs["root"] / "missing")])


@pytest.mark.slow
def test_cli_writes_csv_and_reports_unreadable_files(
    shared_run: dict[str, Any], inputs: dict[str, Any], tmp_path
) -> None:
    root = inputs["root"]
    out = tmp_path / "preds.csv"
    proc = invoke(
        "predict", str(inputs["folder"]), str(root / "rgba.png"), str(root / "broken.png"),
        "--run-dir", shared_run["run_dir"], "--top-k", "2", "--out", str(out),
    )  # fmt: skip
    assert proc.exit_code == 1, proc.output[-2000:]  # one unreadable image -> non-zero exit
    assert "broken.png" in proc.stderr and "unreadable" in proc.stderr and isinstance(proc.exception, SystemExit)
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == N_PNG + 1 and not [r for r in rows if "broken" in r["file"]]
    assert list(rows[0])[:4] == ["file", "class", "probability", "top_k"]
    assert len(rows[0]["top_k"].split()) == 2 and set(shared_run["classes"]) >= {r["class"] for r in rows}
    rgba = next(r for r in rows if r["file"].endswith("rgba.png"))
    grey = next(r for r in rows if r["file"].endswith("img000.png"))
    assert rgba["class"] == grey["class"]  # opaque RGBA of the same pixels: converted to the same grey input
    assert "… and 5 more" in proc.stdout  # 25 rows: the first 20 printed, the rest counted


@pytest.mark.slow
def test_cli_model_uri_writes_json(shared_run: dict[str, Any], inputs: dict[str, Any], tmp_path) -> None:
    out = tmp_path / "preds.json"
    idx = str(inputs["root"] / "extra-images-idx3-ubyte.gz")
    env = {"MLFLOW_TRACKING_URI": shared_run["store"]}
    proc = run_cli("predict", idx, "--model-uri", shared_run["model_uri"], "--out", str(out), env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["classes"] == shared_run["classes"] and len(doc["predictions"]) == 40 and doc["failed"] == []
    first = doc["predictions"][0]
    assert first["class"] == first["top_k"][0]["class"] and len(first["top_k"]) == 3
    expected = reference_predictions(shared_run["model_dir"], inputs["images"][N_PNG:])
    assert [p["class"] for p in doc["predictions"]] == [shared_run["classes"][i] for i in expected]


def invoke(*args: str) -> Any:
    """`clfops ARGS` in-process (click's runner): for exit-code checks that need no fresh interpreter."""
    import logging

    from click.testing import CliRunner

    from clfops.cli import main

    logger = logging.getLogger("clfops")
    saved = logger.handlers[:]
    logger.handlers = [logging.NullHandler()]  # else main() binds a handler to the runner's soon-closed stderr
    try:
        return CliRunner().invoke(main, list(args))
    finally:
        logger.handlers = saved


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["x-images-idx3-ubyte.gz"],  # no model given
        ["{idx}", "--run-dir", "{run_dir}", "--out", "preds.txt"],  # unknown output format
        ["missing.png", "--run-dir", "{run_dir}"],  # no such source
        ["{idx}", "--run-dir", "{run_dir}", "--checkpoint", "{run_dir}/checkpoints/best.ckpt"],  # two models
    ],
)
def test_cli_usage_errors_exit_2(shared_run: dict[str, Any], inputs: dict[str, Any], args: list[str]) -> None:
    idx = str(inputs["root"] / "extra-images-idx3-ubyte.gz")
    result = invoke("predict", *(a.format(idx=idx, run_dir=shared_run["run_dir"]) for a in args))
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("clfops: error:") and len(result.stderr.strip().splitlines()) == 1
