"""Fine-tuning from a logged model (`model.init`, `model.freeze`, `optimizer.backbone_lr_scale`), its lineage
tags and dataset input, and that it pays: on a small folder data set cut from real Fashion-MNIST test images,
a fine-tune of the default model beats training the same architecture from scratch for the same steps.

The base model: quick_cnn on the first 10,000 Fashion-MNIST training images for 1 epoch (test acc ~0.86),
registered as `fmnist` with alias `staging`. The folder set ("tops"): the 4 top-wear classes (T-shirt,
pullover, coat, shirt: the hardest to tell apart) from the official *test* images, 100 a class, relabelled
(the base model never saw these images, and its 10-class head does not fit the 4 new classes: replaced).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image
from safetensors.torch import load_file

from clfops import config as C
from clfops.data.sources import load_source
from clfops.tracking.registry import Registry
from clfops.training.train import train
from conftest import TINY, run_cli

TOPS = {0: "tshirt", 2: "pullover", 4: "coat", 6: "shirt"}  # Fashion-MNIST label -> new class folder
# The head-to-head recipe: one epoch of 240 training images at batch 32 (8 steps), no augmentation.
SHORT = [
    "data=folder",
    "data.batch_size=32",
    "trainer.max_epochs=1",
    "augment=none",
    "trainer.precision=32-true",
    "recipe=bf16",  # quick_cnn at width 32, as docs/finetune.md measured (fp32 would pick width 24)
    "logging.progress=none",
]


def make_tops(root: Path, per_class: int = 100) -> Path:
    """root/train/<class>/*.png (75 a class) + root/test/<class>/*.png (25), from Fashion-MNIST test images."""
    source = load_source("fashion_mnist", None)
    for label, name in TOPS.items():
        idx = (source.test.y == label).nonzero().flatten()[:per_class].tolist()
        cut = per_class * 3 // 4
        for split, ids in (("train", idx[:cut]), ("test", idx[cut:])):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in ids:
                Image.fromarray(source.test.x[i, 0].numpy()).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The parent model, registered as fmnist v1 @staging, plus the tops folder and the store."""
    root = tmp_path_factory.mktemp("ft")
    store = f"sqlite:///{root / 'mlflow.db'}"
    overrides = [
        f"run.root={root / 'runs'}",
        f"tracking.uri={store}",
        "run.name=base",
        "data.train_limit=10000",
        "data.test_limit=1000",
        "trainer.max_epochs=1",
        "trainer.precision=32-true",
        "recipe=bf16",  # the parent at width 32, as the runs that start from it
        "logging.progress=none",
        "tracking.register_as=fmnist",
    ]
    summary = train(C.compose("train", overrides), overrides)
    Registry(store).set_alias("fmnist", "staging", "1")
    return {"root": root, "store": store, "summary": summary, "tops": make_tops(root / "tops")}


def _run(base: dict, *overrides: str) -> dict:
    common = [f"run.root={base['root'] / 'runs'}", f"tracking.uri={base['store']}", f"data.root={base['tops']}"]
    args = [*SHORT, *common, *overrides]
    return train(C.compose("train", args), args)


@pytest.mark.slow
def test_finetune_beats_scratch_and_records_its_parent(base: dict) -> None:
    scores = {}
    for seed in (0, 1):
        scratch = _run(base, f"seed={seed}")
        tuned = _run(base, f"seed={seed}", "model.init=models:/fmnist@staging")
        scores[seed] = (scratch["test_acc"], tuned["test_acc"])
        # measured (docs/finetune.md): seed 0 0.32 -> 0.52, seed 1 0.34 -> 0.64 on the 100 test images
        assert tuned["test_acc"] >= scratch["test_acc"] + 0.10, scores
    client = MlflowClient(base["store"])
    tags = client.get_run(tuned["run_id"]).data.tags
    parent_id = base["summary"]["run_id"]
    assert tags["clfops.parent.run_id"] == parent_id
    assert tags["clfops.parent.model_uri"] == "models:/fmnist@staging"
    assert tags["clfops.parent.version"] == "1"
    assert "head classifier.5 replaced" in (Path(tuned["run_dir"]) / "train.log").read_text()
    # the parent's children: one search over every experiment (docs/finetune.md)
    mlflow.set_tracking_uri(base["store"])
    children = mlflow.search_runs(
        search_all_experiments=True, filter_string=f"tags.`clfops.parent.run_id` = '{parent_id}'"
    )
    assert set(children["run_id"]) >= {tuned["run_id"]} and len(children) == 2


def test_every_run_logs_its_data_as_an_mlflow_dataset(base: dict) -> None:
    client = MlflowClient(base["store"])
    parent = client.get_run(base["summary"]["run_id"])
    (found,) = parent.inputs.dataset_inputs
    sha = parent.data.params["data.sha256"]
    assert found.dataset.name == "fashion_mnist" and found.dataset.digest == sha[:32]
    assert json.loads(found.dataset.profile) == {
        "sha256": sha, "images.train": 9000, "images.val": 1000, "images.test": 1000,
    }  # fmt: skip
    assert {t.key: t.value for t in found.tags}["mlflow.data.context"] == "training"
    mlflow.set_tracking_uri(base["store"])
    by_data = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"dataset.name = 'fashion_mnist' AND dataset.digest = '{sha[:32]}' "
        "AND dataset.context = 'training'",
    )
    assert list(by_data["run_id"]) == [base["summary"]["run_id"]]  # the tops runs used other data


def test_same_classes_keep_the_head_and_freeze_backbone_moves_only_it(base: dict) -> None:
    parent = load_file(Path(base["summary"]["run_dir"]) / "model" / "model.safetensors")
    run = base["root"] / "runs"
    args = [*TINY, f"run.root={run}", f"tracking.uri={base['store']}", "run.name=frozen"]
    args += [f"model.init={base['summary']['run_dir']}", "model.freeze=backbone", "augment=none"]
    summary = train(C.compose("train", args), args)
    child = load_file(Path(summary["run_dir"]) / "model" / "model.safetensors")
    assert torch.equal(child["features.0.weight"], parent["features.0.weight"])  # frozen
    assert torch.equal(child["features.4.weight"], parent["features.4.weight"])
    assert not torch.equal(child["classifier.5.weight"], parent["classifier.5.weight"])  # trained, not replaced
    log = (Path(summary["run_dir"]) / "train.log").read_text()
    assert "head kept" in log and "parameters frozen" in log


def test_grey_model_on_rgb_data_averages_the_first_conv(base: dict) -> None:
    from clfops.training.build import build_module
    from clfops.training.finetune import find_parent
    from clfops.training.preflight import preflight

    parent = load_file(Path(base["summary"]["run_dir"]) / "model" / "model.safetensors")
    args = [*TINY, f"tracking.uri={base['store']}", "data.channels=3", f"model.init={base['summary']['run_id']}"]
    cfg = C.compose("train", args)
    prepared = preflight(cfg, None, find_parent(cfg, args))
    net = build_module(cfg, prepared.source, prepared.splits, 1, prepared.init).net
    expected = parent["features.0.weight"].repeat(1, 3, 1, 1) / 3
    assert torch.allclose(net.state_dict()["features.0.weight"], expected)
    grey = torch.rand(2, 1, 28, 28)
    features = net.features[:1]
    assert torch.allclose(
        features(grey.expand(-1, 3, -1, -1)),
        torch.nn.functional.conv2d(grey, parent["features.0.weight"], padding=1),
        atol=1e-5,
    )


def test_backbone_lr_scale_gives_the_backbone_a_fraction_of_the_lr() -> None:
    from clfops.models import create_model
    from clfops.training.schedules import OptimizerSettings, build_optimizer

    net = create_model("quick_cnn", 1, 10, (28, 28), {})
    settings = OptimizerSettings("adamw", 0.01, 0.0005, (0.9, 0.999), backbone_lr_scale=0.1)
    groups = build_optimizer(net, settings).param_groups
    head = {id(p) for p in net.classifier[5].parameters()}
    for group in groups:
        in_head = {id(p) in head for p in group["params"]}
        assert len(in_head) == 1  # a group is all head or all backbone
        assert group["lr"] == pytest.approx(0.01 if in_head == {True} else 0.001)


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("model=cnn", "is a quick_cnn, the run trains cnn: set model=quick_cnn"),
        ("model.args.width=16", "was built with"),
        ("data.size=[32,32]", "does not fit"),
    ],
)
def test_a_model_that_cannot_be_fine_tuned_is_one_line_and_creates_nothing(
    base: dict, tmp_path: Path, override: str, says: str
) -> None:
    runs = tmp_path / "runs"
    args = [*TINY, f"run.root={runs}", f"tracking.uri={base['store']}", f"model.init={base['summary']['run_dir']}"]
    result = run_cli("train", *args, override, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not runs.exists()


def test_unknown_init_reference_is_one_line(base: dict, tmp_path: Path) -> None:
    result = run_cli(
        "train",
        *TINY,
        f"run.root={tmp_path}/runs",
        f"tracking.uri={base['store']}",
        "model.init=models:/nope@staging",
        cwd=tmp_path,
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_killed_fine_tune_resumes_to_the_same_result_without_its_parent(base: dict, tmp_path: Path) -> None:
    """The init is applied once, when the run starts: a resume continues from the checkpoint (the parent may be
    gone by then) and ends exactly where the uninterrupted fine-tune ends (test_resume's recipe and kill)."""
    import shutil
    import signal

    import test_resume as R

    parent = tmp_path / "parent"
    shutil.copytree(base["summary"]["run_dir"], parent)
    skip = ("model.args.dropout", "checkpoint.every_n_epochs")  # the parent has dropout 0; 0 is out of range
    recipe = [a for a in R.RECIPE if not a.startswith(skip)]
    recipe += [f"model.init={parent}", "model.freeze=1", "optimizer.backbone_lr_scale=0.3"]
    whole = train(C.compose("train", [*recipe, f"run.root={tmp_path / 'ref'}", "tracking.enabled=false"]))
    R.RECIPE, saved = recipe, R.RECIPE  # start_and_kill runs R.RECIPE
    try:
        proc, run_dir = R.start_and_kill(tmp_path, signal.SIGTERM)
    finally:
        R.RECIPE = saved
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr.read()
    shutil.rmtree(parent)  # a re-applied init would fail to resolve now
    resumed = run_cli("train", f"resume={run_dir}", f"tracking.uri=sqlite:///{tmp_path}/m.db", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test_acc"] == whole["test_acc"] and summary["test_loss"] == whole["test_loss"]
    assert R.metric_rows(run_dir) == R.metric_rows(Path(whole["run_dir"]))
