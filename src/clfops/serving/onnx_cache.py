"""Exported ONNX graphs, cached by what shapes them; each export puts its own tensors into a cached graph.

Why: the dynamo exporter costs ~5 s a model on 2 cores (torch.export tracing and the translation to ONNX;
2.9 s again for a second export in the same process), paid at the end of every training run, since runs log
their ONNX model by default (docs/benchmarks.md, session 8). Two models of one architecture, input size and
preprocessing give the same graph: only the tensor values differ (weights, BN statistics, the normalisation
constants, the temperature). So the first export of an architecture is stored under
`$CLFOPS_CACHE_DIR/onnx/KEY.onnx`, and later exports load it and replace every initializer named after one of
the module's tensors by that tensor (~0.1 s). No library does this swap; onnx's own API does each step of it.

Why the swap is exact:
- the graph is exported without onnxscript's optimizer (`optimize=False`), which would deduplicate equal
  initializers and fold constants: each state tensor stays one initializer under its own name;
- before a graph is stored, the module is exported a second time with every tensor changed: the two graphs must
  be identical apart from the named initializers' values, so nothing in the graph depends on the values (a
  constant folded from a weight, say); a graph that fails this is used once and not stored;
- the key holds the torch, onnx, onnxscript and clfops versions, every tensor's name, shape and dtype, and
  what the caller says shapes the graph (onnx_export: the opset, the network's class, the model's name and
  arguments, the input's channels and size, the test-time flip);
- a graph from the cache is used only when onnxruntime answers as the module does (the caller's `agrees`), and
  the callers still check the model on real images as for a fresh export (`agreement`).
A missing, unreadable or stale entry, or an unwritable cache, only means a fresh export.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clfops.data.cache import default_cache_dir
from clfops.safe_files import atomic_write_bytes

log = logging.getLogger("clfops")

Export = Callable[[nn.Module], Any]  # module -> onnx.ModelProto (the exporter, without optimizer passes)
Agrees = Callable[[Any], bool]  # onnx.ModelProto -> whether onnxruntime answers as the module does


def cached_export(module: nn.Module, structure: dict[str, Any], export: Export, agrees: Agrees) -> Any:
    """The ONNX ModelProto of `module`: a cached graph holding `module`'s tensors when `agrees(proto)` (onnxruntime
    answers as `module` does), else `export(module)`, stored when it passes the check above. `structure`: what
    else shapes the graph (the network's class...). A value the module holds outside its parameters and buffers
    (a plain tensor attribute, a Python number) is not swapped: `agrees` catches it, and a fresh export follows."""
    values = state_tensors(module)
    path = default_cache_dir() / "onnx" / f"{graph_key(module, values, structure)}.onnx"
    proto = _read(path)
    if proto is not None and _fill(proto, values) and agrees(proto):
        log.debug(f"ONNX graph from the cache: {path}")
        return proto
    other = _perturbed_copy(module)  # copied before `module` is exported: an exported module carries tracing state
    proto = export(module)
    if _blanked(proto, set(values)) == _blanked(export(other), set(values)):  # see "Why the swap is exact"
        try:
            atomic_write_bytes(path, proto.SerializeToString(), durable=False)
        except OSError as err:
            log.debug(f"ONNX graph not cached ({err})")
    return proto


def state_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer (non-persistent ones too) by its dotted name: the names the exporter gives
    the initializers."""
    return dict(module.named_parameters()) | dict(module.named_buffers())


def graph_key(module: nn.Module, values: dict[str, torch.Tensor], structure: dict[str, Any]) -> str:
    versions = {name: _version(name) for name in ("torch", "onnx", "onnxscript", "clfops")}
    tensors = [[name, list(t.shape), str(t.dtype)] for name, t in values.items()]
    spec = {"versions": versions, "class": f"{type(module).__module__}.{type(module).__qualname__}", "tensors": tensors}
    blob = json.dumps(spec | {"structure": structure}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _version(name: str) -> str:
    try:
        return _dist_version(name)
    except PackageNotFoundError:
        return "-"


def _read(path: Path) -> Any:
    if not path.is_file():
        return None
    import onnx
    from google.protobuf.message import DecodeError

    try:
        return onnx.load_model_from_string(path.read_bytes())
    except (OSError, DecodeError) as err:
        log.debug(f"ignoring unreadable ONNX cache entry {path}: {err}")
        return None


def _fill(proto: Any, values: dict[str, torch.Tensor]) -> bool:
    """Put `values` into the initializers of the same names, in place; False (the graph is not used) when one
    of them has another shape or dtype, which the key should have made impossible (a damaged entry)."""
    from onnx import numpy_helper

    for init in proto.graph.initializer:
        tensor = values.get(init.name)
        if tensor is None:
            continue
        array = tensor.detach().cpu().contiguous().numpy()
        if list(init.dims) != list(array.shape) or numpy_helper.to_array(init).dtype != array.dtype:
            return False
        init.CopyFrom(numpy_helper.from_array(array, init.name))
    return True


def _perturbed_copy(module: nn.Module) -> nn.Module:
    """A copy of `module` with every floating tensor changed. Its graph, once the named initializers' contents
    are blanked, equals the original's exactly when nothing else in the graph came from a tensor's value."""
    other = copy.deepcopy(module)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in state_tensors(other).values():
            if tensor.is_floating_point():
                tensor.add_(torch.rand(tensor.shape, generator=gen, dtype=tensor.dtype) + 0.5)
    return other


def _blanked(proto: Any, named: set[str]) -> bytes:
    blank = copy.deepcopy(proto)
    for init in blank.graph.initializer:
        if init.name in named:
            init.ClearField("raw_data")
    return blank.SerializeToString()
