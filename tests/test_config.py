"""Every config group choice composes; user mistakes become one line and exit code 2."""

from __future__ import annotations

import pytest

from clfops import config as C
from conftest import run_cli


@pytest.mark.parametrize(
    ("group", "choice"),
    [(g, c) for g, choices in C.group_choices().items() if g != "experiment" for c in choices],
)
def test_every_group_choice_composes(group: str, choice: str) -> None:
    extra = ["data.root=/some/images"] if group == "data" and choice in ("folder", "stream") else []
    cfg = C.compose("train", [f"{group}={choice}", *extra])
    section = cfg[group]
    if group in ("data", "model", "optimizer", "scheduler"):
        assert section.name == choice


@pytest.mark.parametrize("experiment", C.group_choices()["experiment"])
def test_every_experiment_composes(experiment: str) -> None:
    cfg = C.compose("train", [f"+experiment={experiment}"])
    assert cfg.trainer.max_epochs > 0


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "model=nosuch",
            "model=nosuch: no such choice; valid model choices: air_cnn, cnn, fast_cnn, mlp, quick_cnn, resnet18",
        ),
        ("optimizer.lr=fast", "optimizer.lr: expected a number, got 'fast'"),
        ("trainer.max_epochs=2.5", "trainer.max_epochs: expected an integer"),
        ("nosuch.key=1", "nosuch.key: unknown config key"),
        ("data=folder", "data.root is required"),
        ("optimizer.lr==", "cannot parse override"),
    ],
)
def test_bad_overrides_name_the_key(override: str, expected: str) -> None:
    with pytest.raises(C.ConfigError) as err:
        C.compose("train", [override])
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_cli_bad_override_exits_2_with_one_line() -> None:
    proc = run_cli("train", "model=nosuch")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("clfops: error: model=nosuch") and "fast_cnn" in lines[0]
    assert "Traceback" not in proc.stderr


def test_cfg_job_prints_resolved_config() -> None:
    proc = run_cli("train", "--cfg", "job", "optimizer=sgd", "optimizer.lr=0.2")
    assert proc.returncode == 0, proc.stderr
    assert "name: sgd" in proc.stdout and "lr: 0.2" in proc.stdout


def test_flatten_gives_dotted_param_names() -> None:
    flat = C.flatten(C.compose("train", []))
    assert flat["optimizer.lr"] == 0.003 and flat["model.name"] == "quick_cnn"
    assert flat["trainer.early_stopping.patience"] == 5


def test_default_recipe_flips_but_mnist_does_not() -> None:
    """Fashion-MNIST's default trains and tests with flips; a mirrored digit is another glyph, so data=mnist
    switches to augment=none unless the command line asks for flips."""
    default = C.compose("train", [])
    assert default.augment.flip_p == 0.5 and default.augment.test_flip is True
    mnist = C.compose("train", ["data=mnist"])
    assert mnist.data.name == "mnist" and mnist.augment.flip_p == 0.0 and mnist.augment.test_flip is False
    asked = C.compose("train", ["data=mnist", "augment=flip"])
    assert asked.augment.flip_p == 0.5 and asked.augment.test_flip is True
    assert C.compose("train", ["+experiment=mnist_cnn"]).augment.flip_p == 0.0


def test_test_flip_without_flip_training_is_refused_in_one_line() -> None:
    proc = run_cli("train", "augment=none", "augment.test_flip=true")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "clfops: error: augment.test_flip=true needs augment.flip_p > 0: a model never trained on mirrored "
        "images loses 4-8 % accuracy on them; set augment.flip_p=0.5 or augment.test_flip=false"
    ]
