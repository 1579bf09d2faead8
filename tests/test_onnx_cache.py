"""The cache of exported ONNX graphs (serving/onnx_cache.py): a second export of an architecture takes the cached
graph with its own tensors, and is the very model a fresh export writes; what cannot be cached is not."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from clfops.models import create_model
from clfops.serving import onnx_export as E
from clfops.serving.onnx_cache import cached_export
from clfops.serving.saved_model import Manifest

pytestmark = pytest.mark.slow  # each export is a few seconds of torch.export

HIT = "ONNX graph from the cache"


def trained_looking(seed: int) -> nn.Module:
    """quick_cnn with every tensor random (BN statistics and scales too), as no two trained nets are alike."""
    torch.manual_seed(seed)
    net = create_model("quick_cnn", 1, 10, (28, 28), {"width": 8})
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return net.eval()


def manifest(temperature: float, mean: float = 0.286) -> Manifest:
    return Manifest(
        model="quick_cnn",
        model_args={"width": 8},
        classes=[f"c{i}" for i in range(10)],
        in_channels=1,
        image_size=[28, 28],
        mean=[mean],
        std=[0.353],
        test_flip=True,
        data_sha256="0" * 64,
        run_id="r",
        temperature=temperature,
    )


def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (32, 1, 28, 28), dtype=np.uint8)


def onnx_probabilities(blob: bytes) -> np.ndarray:
    return E.onnx_probabilities(E.session(blob), images())


def test_second_export_comes_from_the_cache_and_is_the_fresh_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="clfops")
    monkeypatch.setenv("CLFOPS_CACHE_DIR", str(tmp_path / "cache"))
    first = E.export_bytes(trained_looking(0), manifest(1.3))
    entries = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(entries) == 1 and HIT not in caplog.text
    stored = entries[0].read_bytes()

    # Other weights, BN statistics, temperature and normalisation: the same graph, from the cache.
    net, other = trained_looking(1), manifest(1.7, mean=0.3)
    cached = E.export_bytes(net, other)
    assert HIT in caplog.text and entries[0].read_bytes() == stored  # used, not rewritten
    check = E.agreement(cached, net, other, images())
    assert check.ok and check.max_prob_diff < 1e-6, check
    assert not np.allclose(onnx_probabilities(cached), onnx_probabilities(first))  # its own tensors, not the first's

    # Byte for byte what an export without the cache writes.
    monkeypatch.setenv("CLFOPS_CACHE_DIR", str(tmp_path / "empty"))
    assert E.export_bytes(net, other) == cached
    meta = {p.key: p.value for p in onnx.load_from_string(cached).metadata_props}
    assert meta["run_id"] == "r" and meta["image_size"] == "[28, 28]"


def test_a_damaged_entry_is_replaced_by_a_fresh_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLFOPS_CACHE_DIR", str(tmp_path))
    E.export_bytes(trained_looking(0), manifest(1.0))
    (entry,) = (tmp_path / "onnx").glob("*.onnx")
    entry.write_bytes(b"\x08\x07 not an onnx model")
    net = trained_looking(2)
    blob = E.export_bytes(net, manifest(1.2))
    assert E.agreement(blob, net, manifest(1.2), images()).ok
    onnx.checker.check_model(onnx.load(str(entry)))  # the entry is a whole model again


class PlainAttribute(nn.Module):
    """A value outside the parameters and buffers (a plain tensor attribute): the graph holds it as a constant
    of its own, which the cache does not swap."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = torch.tensor(scale)
        self.linear = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * self.scale


def plain_export(module: nn.Module) -> onnx.ModelProto:
    program = torch.onnx.export(module, (torch.zeros(2, 4),), dynamo=True, optimize=False, verbose=False)
    assert program is not None
    return program.model_proto


def run(proto: onnx.ModelProto, x: torch.Tensor) -> np.ndarray:
    return E.session(proto.SerializeToString()).run(None, {proto.graph.input[0].name: x.numpy()})[0]


def test_a_value_the_swap_misses_gives_a_fresh_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLFOPS_CACHE_DIR", str(tmp_path))
    x = torch.randn(2, 4)  # the exported batch size (plain_export: static shapes)

    def exported(module: nn.Module) -> np.ndarray:
        def agrees(proto: onnx.ModelProto) -> bool:
            return np.allclose(run(proto, x), module(x).detach().numpy(), rtol=1e-5)

        return run(cached_export(module.eval(), {"test": "plain attribute"}, plain_export, agrees), x)

    first, second = PlainAttribute(3.0), PlainAttribute(5.0)
    np.testing.assert_allclose(exported(first), first(x).detach().numpy(), rtol=1e-5)
    assert list((tmp_path / "onnx").glob("*.onnx"))  # stored: its tensors are all the perturbation changes
    # Same key, but the cached graph holds 3.0: it disagrees with the module, so the second is exported afresh.
    np.testing.assert_allclose(exported(second), second(x).detach().numpy(), rtol=1e-5)
