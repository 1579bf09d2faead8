"""Every config key is typed and range-checked; bad input gives one line, exit 2, and creates nothing.

The generated cases come from the schema itself (clfops.config: schema.py, groups.py): for every leaf of the
composed default config and of each group option, a value of the wrong type and (where the field declares a
range or choices) one outside it. A key added later is covered as soon as it has a schema field, and a key
without one fails `test_every_leaf_key_has_a_schema_field`. In-process (compose once per option, then
`config.override`), so the hundreds of cases take seconds; a handful go through the real CLI to check exit code,
output and files.
"""

from __future__ import annotations

import dataclasses
import math
import sqlite3
import typing
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig, OmegaConf

from clfops import config as C
from clfops.config.fields import field_meta
from clfops.config.schema import SCHEMAS
from conftest import TINY, run_cli

# Group options that need a value the defaults leave open.
REQUIRED = {"data=folder": ["data.root=/nonexistent"], "data=stream": ["data.root=/nonexistent"]}


def _options() -> list[str]:
    options = [""]
    for group, choices in C.group_choices().items():
        prefix = "+" if group == "experiment" else ""
        options += [f"{prefix}{group}={choice}" for choice in choices]
    return options


@cache
def _composed(option: str) -> DictConfig:
    return C.compose("train", [option, *REQUIRED.get(option, [])] if option else [])


def _leaves(cfg: DictConfig, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, schema class of its parent, field name) for every leaf of `cfg`."""
    kind = OmegaConf.get_type(cfg)
    out = []
    for key in cfg:
        value = cfg[key] if not OmegaConf.is_missing(cfg, key) else None
        if isinstance(value, DictConfig) and "types" not in _meta(kind, str(key)):
            out += _leaves(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", kind, str(key)))
    return out


def _meta(kind: Any, key: str) -> dict[str, Any]:
    if not dataclasses.is_dataclass(kind) or key not in {f.name for f in dataclasses.fields(kind)}:
        return {}
    return field_meta(kind, key)


def _base_type(kind: Any, key: str) -> Any:
    ref = typing.get_type_hints(kind)[key]
    args = [a for a in typing.get_args(ref) if a is not type(None)]
    return args[0] if typing.get_origin(ref) in (typing.Union, type(int | None)) else ref


def _wrong_type(kind: Any, key: str) -> str:
    """A value OmegaConf (or the range pass, for `Any` fields) must refuse for this field."""
    meta = _meta(kind, key)
    if "types" in meta:
        return "[1, 2]"
    ref = _base_type(kind, key)
    if typing.get_origin(ref) is list:
        return "abc"
    return {int: "abc", float: "abc", bool: "maybe", str: "[1, 2]"}[ref]


def _out_of_range(kind: Any, key: str) -> list[str]:
    """Values just outside the declared range or choices (none when the field declares neither)."""
    meta = _meta(kind, key)
    ref = _base_type(kind, key)
    listed = typing.get_origin(ref) is list
    item = typing.get_args(ref)[0] if listed else ref
    values: list[Any] = []
    low, high = meta.get("min"), meta.get("max")
    if low is not None:
        values.append(low if meta.get("exclusive") else (low - 1 if item is int else low - 0.5))
    if high is not None:
        values.append(high if meta.get("exclusive") else (high + 1 if item is int else high + 0.5))
    choices = meta.get("choices")
    if choices is not None and "types" not in meta:
        values.append("nosuch" if isinstance(choices[0], str) else max(choices) + 1)
    if listed:
        good = 1 if item is int else 0.5
        cases = [f"[{', '.join([str(v)] * meta.get('length', 1))}]" for v in values]
        if "length" in meta:
            cases.append(f"[{', '.join([str(good)] * (meta['length'] + 1))}]")
        return cases
    return [str(v) for v in values]


@cache
def _cases() -> list[tuple[str, str]]:
    """(group option, bad override): each schema field once (the first option whose config has it)."""
    cases, seen = [], set()
    for option in _options():
        for key, kind, name in _leaves(_composed(option)):
            if not dataclasses.is_dataclass(kind) or name not in {f.name for f in dataclasses.fields(kind)}:
                continue  # reported by test_every_leaf_key_has_a_schema_field
            if (kind, name) in seen:
                continue
            seen.add((kind, name))
            cases.append((option, f"{key}={_wrong_type(kind, name)}"))
            cases += [(option, f"{key}={value}") for value in _out_of_range(kind, name)]
    return cases


def test_every_leaf_key_has_a_schema_field() -> None:
    unchecked = []
    for option in _options():
        for key, kind, name in _leaves(_composed(option)):
            declared = dataclasses.is_dataclass(kind) and name in {f.name for f in dataclasses.fields(kind)}
            if not declared:
                unchecked.append(f"{option or 'default'}: {key}")
    assert not unchecked, f"keys without a schema field (src/clfops/config/schema.py, groups.py): {unchecked}"


def test_every_schema_is_named_by_a_yaml_file() -> None:
    """A schema that no config file names checks nothing."""
    used = {OmegaConf.get_type(node) for option in _options() for node in _nodes(_composed(option))}
    for schemas in SCHEMAS.values():
        for name, kind in schemas.items():
            assert kind in used, f"schema {name} is not in any configs/ defaults list"


def _nodes(cfg: DictConfig) -> list[DictConfig]:
    out = [cfg]
    for key in cfg:
        if isinstance(cfg[key], DictConfig):
            out += _nodes(cfg[key])
    return out


@pytest.mark.parametrize(("option", "item"), _cases())
def test_a_bad_value_is_one_line_naming_the_key(option: str, item: str) -> None:
    key = item.split("=", 1)[0]
    with pytest.raises(C.ConfigError) as err:
        C.override(_composed(option), item)
    message = str(err.value)
    assert message.startswith(key), message
    assert "\n" not in message and "expected" in message and "got" in message


def test_the_generated_cases_cover_every_leaf() -> None:
    """Every leaf key of every option has a case; every ranged field also one out of range."""
    keys = {item.split("=", 1)[0] for _, item in _cases()}
    leaves = {key for option in _options() for key, _, _ in _leaves(_composed(option))}
    assert keys == leaves
    for key in ("trainer.gradient_clip_val", "trainer.num_threads", "data.size", "data.mean", "data.s3.region"):
        assert key in keys
    assert len(_cases()) > 2 * len(keys)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["trainer.gradient_clip_val=abc"], "trainer.gradient_clip_val: expected a number or null, got 'abc'"),
        (["trainer.num_threads=two"], "trainer.num_threads: expected an integer or null, got 'two'"),
        (["trainer.max_epochs=0"], "trainer.max_epochs: expected an integer >= 1, got 0"),
        (["optimizer.lr=-1"], "optimizer.lr: expected a number >= 0, got -1.0"),
        (["data.batch_size=0"], "data.batch_size: expected an integer >= 1, got 0"),
        (["data.val_fraction=1"], "data.val_fraction: expected a number in (0, 1), got 1.0"),
        (["data.size=[28]"], "data.size: expected a list of 2 values"),
        (["trainer.devices=0"], "trainer.devices: expected an integer >= 1 or auto, got 0"),
        (["optimizer=adam", "optimizer.name=sgd"], "optimizer.name: expected one of: adam, adamw, got 'sgd'"),
        (["scheduler=plateau", "scheduler.monitor=val/nope"], "scheduler.monitor: expected one of: val/acc"),
        (["model=cnn", "model.args.dropout=2"], "model.args.dropout: expected a number in [0, 1], got 2.0"),
    ],
)
def test_the_issues_examples_in_process(overrides: list[str], expected: str) -> None:
    with pytest.raises(C.ConfigError) as err:
        C.compose("train", overrides)
    assert str(err.value).startswith(expected)


def _nothing_created(tmp_path: Path, store: Path) -> None:
    assert not (tmp_path / "runs").exists(), list((tmp_path / "runs").iterdir())
    assert not (tmp_path / "mlflow.db").exists()
    if store.exists():
        with sqlite3.connect(store) as db:
            assert db.execute("select count(*) from runs").fetchone()[0] == 0


def _one_line_exit_2(result: Any, needle: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("clfops: error: ") and needle in lines[0], result.stderr


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["trainer.gradient_clip_val=abc"], "trainer.gradient_clip_val"),
        (["trainer.max_epochs=0"], "trainer.max_epochs"),
        (["tracking.uri=http://127.0.0.1:9"], "http://127.0.0.1:9 is unreachable"),
        (["data=folder", "data.root=BADIMAGES"], "broken.png: unreadable image"),
        (["data=folder", "data.root=ONECLASS"], "at least 2"),
    ],
)
def test_a_refused_train_leaves_nothing_behind(tmp_path: Path, overrides: list[str], needle: str) -> None:
    images = _image_folders(tmp_path / "images")
    overrides = [o.replace("BADIMAGES", str(images["bad"])).replace("ONECLASS", str(images["one"])) for o in overrides]
    store = tmp_path / "store.db"
    base = [f"run.root={tmp_path / 'runs'}", *TINY]
    uri = [] if any(o.startswith("tracking.uri") for o in overrides) else [f"tracking.uri=sqlite:///{store}"]
    result = run_cli("train", *base, *uri, *overrides, cwd=tmp_path)
    _one_line_exit_2(result, needle)
    _nothing_created(tmp_path, store)


def _image_folders(root: Path) -> dict[str, Path]:
    from PIL import Image

    for name, classes in (("bad", "ab"), ("one", "a")):
        for cls in classes:
            (root / name / cls).mkdir(parents=True, exist_ok=True)
            for i in range(4):
                Image.new("L", (8, 8), color=i * 40).save(root / name / cls / f"{i}.png")
    (root / "bad" / "a" / "broken.png").write_bytes(b"not a png")
    return {"bad": root / "bad", "one": root / "one"}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["evaluate", "--run-id", "UNKNOWN"], "no such store"),
        (["predict", "--run-id", "UNKNOWN", "x.png"], "no such store"),
        (["register", "--run-id", "UNKNOWN", "--name", "m"], "no such store"),
        (["models", "nosuch"], "no such store"),
        (["compare", "--runs", "a", "b"], "no such store"),
        (["evaluate", "--run-id", "x", "--tracking-uri", "http://127.0.0.1:9"], "unreachable"),
        (["lr-find", "trainer.max_epochs=0"], "trainer.max_epochs"),
        (["batch-size-find", "optimizer.lr=-1"], "optimizer.lr"),
        (["augment-preview", "augment.flip_p=2"], "augment.flip_p"),
        (["data", "pack", "/nonexistent", "out"], "/nonexistent"),
        (["sync", "/nonexistent"], "/nonexistent"),
    ],
)
def test_every_verb_answers_a_mistake_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], needle: str
) -> None:
    """In-process (click's runner: the imports are paid once), in an empty working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the default store: sqlite:///mlflow.db here
    _one_line_exit_2(_invoke(args), needle)
    assert not (tmp_path / "mlflow.db").exists()  # reading a store that is not there does not create it


def _invoke(args: list[str]) -> Any:
    from click.testing import CliRunner

    from clfops.cli import main

    result = CliRunner().invoke(main, args, prog_name="clfops")
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    result.returncode = result.exit_code
    return result


def test_unknown_run_and_model_in_an_existing_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from clfops.tracking import client

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client(store)  # an existing, empty store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    _one_line_exit_2(_invoke(["predict", "--run-id", "UNKNOWN", "x.png"]), "UNKNOWN")
    _one_line_exit_2(_invoke(["models", "nosuch"]), "nosuch")


@pytest.mark.parametrize("name", ["none", "step", "multistep", "exponential", "cosine", "onecycle", "plateau"])
def test_every_schedule_steps_through_a_tiny_run(name: str) -> None:
    """1-4 steps per epoch, 1-2 epochs, warmups longer than the run: no error, a finite positive LR."""
    import torch

    from clfops.training.schedules import SchedulerSettings, build_scheduler

    settings = C.to_container(_composed(f"scheduler={name}").scheduler)
    for warmup in (0, 1, 3) if "warmup_epochs" in settings else (None,):
        s = SchedulerSettings(**{**settings, **({} if warmup is None else {"warmup_epochs": warmup})})
        for steps, epochs in ((1, 1), (2, 1), (3, 1), (4, 1), (1, 2), (3, 2)):
            opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
            sched = build_scheduler(opt, s, steps, epochs)
            for _ in range(steps * epochs):
                opt.step()
                if sched is not None and sched["interval"] == "step":
                    sched["scheduler"].step()
            if sched is not None and sched["interval"] == "epoch":
                for _ in range(epochs):
                    sched["scheduler"].step(1.0) if name == "plateau" else sched["scheduler"].step()
            lr = opt.param_groups[0]["lr"]
            assert math.isfinite(lr) and lr >= 0


def test_the_issues_tiny_run_trains(compose: Any, caplog: pytest.LogCaptureFixture) -> None:
    """data.train_limit=600 trainer.max_epochs=1 (4 steps of 128): OneCycle divided by zero; now it trains."""
    from clfops.training.train import train

    cfg = compose("data.batch_size=128", "data.val_fraction=0.1", "data.test_limit=200", "tracking.enabled=false")
    with caplog.at_level("INFO", logger="clfops"):
        summary = train(cfg)
    assert summary["epochs"] == 1 and 0 <= summary["test_acc"] <= 1
    assert any("too few to rise and fall" in r.getMessage() for r in caplog.records)
