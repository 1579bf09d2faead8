"""A small timm-style model registry.

Every architecture is a plain ``nn.Module`` built by a function registered with ``@register_model``
(registered under the function's name). A builder takes the data-determined arguments
``in_channels``, ``num_classes`` and ``image_size`` plus its own explicit, typed keyword arguments
(``dropout``, ``width``...), which the config passes through ``create_model(..., args={...})``.

    >>> model = create_model("fast_cnn", in_channels=1, num_classes=10, image_size=(28, 28), args={})

Weights are initialised from torch's global RNG, so ``torch.manual_seed(s)`` before ``create_model``
gives identical weights.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from clfops.errors import UserError

__all__ = [
    "FlipAveraged",
    "ModelError",
    "ModelSpec",
    "check_input",
    "count_params",
    "create_model",
    "list_models",
    "model_spec",
    "register_model",
    "tta_logits",
]

# Arguments every builder takes and that come from the data, never from the model config.
DATA_ARGS = ("in_channels", "num_classes", "image_size")


class ModelError(UserError):
    """A user-facing model problem (unknown model, bad argument, input mismatch): one line, no traceback."""


@dataclass(frozen=True)
class ModelSpec:
    """What a registered model accepts.

    ``input_size`` is a fixed (H, W) the architecture requires whatever it was built for, or ``None``.
    ``fixed_at_build`` says that the model only accepts the ``image_size`` it was built for (it has a
    flatten + linear head); when False it takes any size >= ``min_size`` (global pooling head).
    """

    name: str
    channels: tuple[int, ...]
    input_size: tuple[int, int] | None
    fixed_at_build: bool
    min_size: int
    description: str
    defaults: Mapping[str, Any]  # the model-specific keyword arguments and their defaults


F = TypeVar("F", bound=Callable[..., nn.Module])

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_SPECS: dict[str, ModelSpec] = {}


def register_model(
    fn: F | None = None,
    *,
    channels: tuple[int, ...] = (1, 3),
    input_size: tuple[int, int] | None = None,
    fixed_at_build: bool = False,
    min_size: int = 1,
) -> Any:
    """Register a builder under its function name; usable bare (``@register_model``) or with options.

    The description is the first line of the builder's docstring.
    """

    def deco(f: F) -> F:
        name = f.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        params = inspect.signature(f).parameters
        missing = [a for a in DATA_ARGS if a not in params]
        if missing:
            raise TypeError(f"model builder {name!r} must take {', '.join(missing)}")
        defaults = {
            k: p.default for k, p in params.items() if k not in DATA_ARGS and p.default is not inspect.Parameter.empty
        }
        doc = (inspect.getdoc(f) or "").strip().splitlines()
        _REGISTRY[name] = f
        _SPECS[name] = ModelSpec(
            name=name,
            channels=tuple(channels),
            input_size=input_size,
            fixed_at_build=fixed_at_build,
            min_size=min_size,
            description=doc[0] if doc else name,
            defaults=types.MappingProxyType(defaults),
        )
        return f

    if fn is not None:
        return deco(fn)
    return deco


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def _unknown(name: str) -> ModelError:
    return ModelError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")


def model_spec(name: str) -> ModelSpec:
    _ensure_loaded()
    if name not in _SPECS:
        raise _unknown(name)
    return _SPECS[name]


def _type_ok(value: Any, annotation: Any) -> bool:
    """Loose check of a config value against a builder's annotation (ints are fine for floats)."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def create_model(
    name: str,
    in_channels: int,
    num_classes: int,
    image_size: tuple[int, int],
    args: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build registered model ``name`` for the given data shape; ``args`` are its own keyword arguments."""
    spec = model_spec(name)
    builder = _REGISTRY[name]
    args = dict(args or {})
    h, w = (int(s) for s in image_size)
    if in_channels not in spec.channels:
        raise ModelError(
            f"model {name!r} supports {' or '.join(map(str, spec.channels))} input channel(s), "
            f"the data has {in_channels}"
        )
    if num_classes < 1:
        raise ModelError(f"num_classes must be >= 1, got {num_classes}")
    if spec.input_size is not None and (h, w) != tuple(spec.input_size):
        raise ModelError(f"model {name!r} needs {spec.input_size[0]}x{spec.input_size[1]} images, the data is {h}x{w}")
    if min(h, w) < spec.min_size:
        raise ModelError(f"model {name!r} needs images of at least {spec.min_size}x{spec.min_size}, got {h}x{w}")

    hints = typing.get_type_hints(builder)
    accepted = sorted(spec.defaults)
    for key, value in args.items():
        if key in DATA_ARGS:
            raise ModelError(f"model argument {key!r} is set from the data set and cannot be given")
        if key not in spec.defaults:
            raise ModelError(f"model {name!r} has no argument {key!r}; accepted: {', '.join(accepted) or '(none)'}")
        if not _type_ok(value, hints.get(key, inspect.Parameter.empty)):
            expected = getattr(hints[key], "__name__", str(hints[key]))
            raise ModelError(
                f"model {name!r} argument {key!r} must be {expected}, got {value!r} ({type(value).__name__})"
            )
    try:
        return builder(in_channels=in_channels, num_classes=num_classes, image_size=(h, w), **args)
    except ModelError:
        raise
    except (ValueError, TypeError) as e:
        raise ModelError(f"cannot build model {name!r} with {args}: {e}") from e


def check_input(shape: tuple[int, ...], in_channels: int, image_size: tuple[int, int] | None, name: str) -> None:
    """Raise ModelError unless ``shape`` is (B, in_channels, *image_size) (size unchecked if None)."""
    if len(shape) != 4 or shape[1] != in_channels or (image_size is not None and tuple(shape[2:]) != image_size):
        want = f"(B, {in_channels}, {image_size[0]}, {image_size[1]})" if image_size else f"(B, {in_channels}, H, W)"
        raise ModelError(f"{name} was built for inputs {want}, got {tuple(shape)}")


def check_dropout(p: float) -> None:
    if not 0.0 <= p < 1.0:
        raise ModelError(f"dropout must be in [0, 1), got {p}")


def check_positive(name: str, v: int) -> None:
    if v < 1:
        raise ModelError(f"{name} must be >= 1, got {v}")


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


_LOADED = False


def _ensure_loaded() -> None:
    # Builders live in submodules that import this module; import them lazily to avoid a cycle.
    global _LOADED
    if not _LOADED:
        _LOADED = True
        from clfops.models import cnn, fast, mlp, resnet  # noqa: F401


def tta_logits(net: nn.Module, x: torch.Tensor, flip: bool) -> torch.Tensor:
    """`net(x)`; with `flip` (test-time flip), the mean of the logits of `x` and of its mirror image.

    For models trained with horizontal flips (augment.test_flip): +0.2-0.3 % Fashion-MNIST test accuracy for
    a second forward pass. Without flip training it costs 4-8 % (docs/benchmarks.md), hence the config check.
    """
    logits = net(x)
    if flip:
        logits = (logits + net(x.flip(-1))) / 2
    return logits


class FlipAveraged(nn.Module):
    """`net` answering with test-time flip: what the mlflow.pytorch flavor holds for a test_flip model, so
    `mlflow.pytorch.load_model` users get the predictions the pyfunc model, `predict` and `evaluate` give."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tta_logits(self.net, x, True)
