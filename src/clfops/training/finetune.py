"""Fine-tuning: a run that starts from a logged model's weights (`model.init=REF`), and freezing part of it.

`model.init` takes any model reference `serving.resolve` knows (run dir, checkpoint, MLflow run id,
runs:/…, models:/NAME@ALIAS, models:/NAME/N); the weights come from model.safetensors (a checkpoint ref is
read weights_only by the resolver). `resolve_init` runs in preflight, before the run dir or the MLflow run
exist: another architecture, other model args, another image size for a size-bound model, or channels that
cannot be adapted are one line, exit 2.

- The classifier head is the net's last `nn.Linear` (true of every registered model). It is kept when the
  class list is the same (names and order), else freshly initialised, with one log line saying so.
- Channels: a grey parent on RGB data gets first-conv weights w/3 on each of R, G, B (the mean of the three
  channels goes through the grey filter: a grey image gives the parent's response); an RGB parent on grey data
  gets the sum over its three input channels (a grey image replicated to RGB gives the same response).
- `model.freeze`: `none`; `backbone` (everything but the head); or N, the first N weight layers (conv or
  linear) and the norm layers that follow them. Frozen tensors get requires_grad=False; BatchNorm running
  statistics still adapt to the new data in train mode (their affine weights stay frozen).
- On resume the init is not re-applied: the checkpoint holds the weights (freezing is applied again, as it is
  not part of the checkpoint).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from clfops import config as C
from clfops.data import Source
from clfops.errors import UserError
from clfops.serving.resolve import ResolvedModel
from clfops.serving.saved_model import Manifest

log = logging.getLogger("clfops")

# Tags a fine-tuned run carries (the search for a model's children filters on PARENT_RUN_ID).
PARENT_RUN_ID = "clfops.parent.run_id"
PARENT_MODEL_URI = "clfops.parent.model_uri"
PARENT_VERSION = "clfops.parent.version"
PARENT_REF = "clfops.parent.ref"


class FinetuneError(UserError):
    """model.init / model.freeze that cannot apply to this run (one line, exit 2, nothing created)."""


@dataclass(frozen=True)
class InitModel:
    """The model a fine-tune starts from, resolved once (preflight) and handed to the run."""

    ref: str  # as given
    manifest: Manifest
    state: dict[str, torch.Tensor]  # the parent net's weights, CPU
    run_id: str | None
    model_uri: str  # models:/… as given, else runs:/ID/model, else the path
    version: str | None  # the registered version a models:/ reference named (an alias resolved)

    def tags(self) -> dict[str, str]:
        tags = {PARENT_REF: self.ref, PARENT_MODEL_URI: self.model_uri}
        if self.run_id:
            tags[PARENT_RUN_ID] = self.run_id
        if self.version:
            tags[PARENT_VERSION] = self.version
        return tags


def parse_freeze(value: Any) -> str | int:
    """model.freeze -> "none", "backbone" or a number of leading weight layers (schema checked the type)."""
    if isinstance(value, int):
        return value
    text = str(value)
    if text.isdigit():
        return int(text)
    if text not in ("none", "backbone"):
        raise FinetuneError(f"model.freeze={text!r}: expected none, backbone or a number of leading layers")
    return text


def find_parent(cfg: DictConfig, overrides: list[str]) -> ResolvedModel | None:
    """model.init -> the parent model (None without it), and the run takes the parent's architecture.

    Called when the run's settings are settled (every rank; before anything is created). A fine-tune has the
    parent's shapes, so `model.args` the command line does not name become the parent's: a parent trained
    at width 24 (the fp32 recipe) is fine-tuned at width 24 without repeating it. `model.args.K=V` on the
    command line is kept and checked in `resolve_init` (a clash is one line). Another architecture is not
    switched silently: its group's types and defaults differ, so `model=NAME` is asked for instead.
    """
    ref = cfg.model.get("init")
    if not ref:
        return None
    from clfops.serving.resolve import resolve_model

    found = resolve_model(str(ref), cfg.tracking.uri)
    if found.manifest.model == cfg.model.name:
        named = [o for o in overrides if C.override_key(o) != "model"]  # the group's defaults are not a choice
        for key, value in found.manifest.model_args.items():
            if not C.names(f"model.args.{key}", named):
                OmegaConf.update(cfg, f"model.args.{key}", value, merge=False)
    return found


def resolve_init(cfg: DictConfig, source: Source, found: ResolvedModel | None) -> InitModel | None:
    """The parent (`find_parent`), checked against this run's model and data; None without model.init."""
    ref = cfg.model.init
    freeze = parse_freeze(cfg.model.freeze)
    if not ref or found is None:
        if freeze != "none" and freeze != 0:
            raise FinetuneError(f"model.freeze={freeze} needs model.init=REF (frozen random weights learn nothing)")
        return None
    m = found.manifest
    if m.model != cfg.model.name:
        raise FinetuneError(f"model.init={ref} is a {m.model}, the run trains {cfg.model.name}: set model={m.model}")
    args = C.to_container(cfg.model.args)
    if dict(m.model_args) != dict(args):
        clash = ", ".join(f"model.args.{k}={args.get(k)}" for k, v in m.model_args.items() if args.get(k) != v)
        raise FinetuneError(
            f"model.init={ref} was built with {m.model_args}; this run sets {clash or args}: drop it to keep the "
            "parent's shapes"
        )
    if m.in_channels != source.channels and {m.in_channels, source.channels} != {1, 3}:
        raise FinetuneError(
            f"model.init={ref} takes {m.in_channels} channel(s), the data has {source.channels}: only grey <-> RGB "
            "adapts; set data.channels"
        )
    model_uri, version = _origin(str(ref), found.run_id, cfg.tracking.uri)
    init = InitModel(str(ref), m, dict(found.net.state_dict()), found.run_id, model_uri, version)
    check_fits(cfg, source, init, freeze)
    return init


def _origin(ref: str, run_id: str | None, tracking_uri: str | None) -> tuple[str, str | None]:
    """(model URI, registered version) of a reference: models:/NAME@ALIAS resolves to its version now."""
    if ref.startswith("models:/"):
        name, _, rest = ref.removeprefix("models:/").partition("/")
        if "@" in name:
            from clfops.tracking.registry import Registry

            held = Registry(tracking_uri).alias_version(*name.split("@", 1))
            return ref, str(held.version) if held is not None else None
        return ref, rest.split("/")[0] if rest.split("/")[0].isdigit() else None
    if ref.startswith("runs:/"):
        return ref, None
    return (f"runs:/{run_id}/model" if run_id else ref), None


def check_fits(cfg: DictConfig, source: Source, init: InitModel, freeze: str | int) -> None:
    """Build this run's net and load the parent into it (cheap): weights that do not fit are one line."""
    from clfops.models import create_model

    net = create_model(
        cfg.model.name, source.channels, len(source.classes), source.size, C.to_container(cfg.model.args)
    )
    apply_init(net, init, list(source.classes), quiet=True)
    apply_freeze(net, freeze)


def head_name(net: nn.Module) -> str:
    """The classifier head: the last nn.Linear of the net (its weights map features to class logits)."""
    names = [name for name, mod in net.named_modules() if isinstance(mod, nn.Linear)]
    if not names:
        raise FinetuneError(f"{type(net).__name__} has no linear layer: no classifier head to keep or replace")
    return names[-1]


def is_head(param_name: str, head: str) -> bool:
    return param_name.startswith(f"{head}.")


def apply_init(net: nn.Module, init: InitModel, classes: list[str], quiet: bool = False) -> None:
    """Load the parent's weights into `net`: head kept for the same classes, else left as initialised."""
    head = head_name(net)
    own = net.state_dict()
    same_classes = list(init.manifest.classes) == list(classes)
    state: dict[str, torch.Tensor] = {}
    adapted = ""
    for key, value in init.state.items():
        if is_head(key, head) and not same_classes:
            continue
        target = own.get(key)
        if target is None:
            raise FinetuneError(f"model.init={init.ref}: weight {key} has no place in this {init.manifest.model}")
        if value.shape != target.shape:
            value, adapted = _adapt(key, value, target.shape, init), key
        state[key] = value
    net.load_state_dict(state, strict=same_classes)
    if quiet:
        return
    if same_classes:
        log.info(f"model.init: {init.model_uri}: all weights loaded, head kept ({len(classes)} classes, the same)")
    else:
        log.info(
            f"model.init: {init.model_uri}: head {head} replaced (freshly initialised): the parent's classes "
            f"{init.manifest.classes} differ from the data's {classes}"
        )
    if adapted:
        to = net.state_dict()[adapted].shape[1]
        log.info(f"model.init: {adapted} adapted from {init.manifest.in_channels} to {to} input channels")


def _adapt(key: str, value: torch.Tensor, shape: torch.Size, init: InitModel) -> torch.Tensor:
    """First-conv input channels grey <-> RGB (module docstring); any other mismatch is refused."""
    if value.ndim == 4 and value.shape[0] == shape[0] and value.shape[2:] == shape[2:]:
        if value.shape[1] == 1 and shape[1] == 3:
            return value.repeat(1, 3, 1, 1) / 3.0
        if value.shape[1] == 3 and shape[1] == 1:
            return value.sum(dim=1, keepdim=True)
    what = f"{tuple(value.shape)} vs {tuple(shape)}"
    hint = "the image size or channel count differs: set data.size / data.channels to the parent's"
    raise FinetuneError(f"model.init={init.ref}: weight {key} does not fit ({what}): {hint}")


def apply_freeze(net: nn.Module, freeze: str | int) -> int:
    """requires_grad=False on the frozen part; returns the number of frozen parameters."""
    if freeze == "none" or freeze == 0:
        return 0
    frozen: set[str] = set()
    if freeze == "backbone":
        head = head_name(net)
        frozen = {name for name, _ in net.named_parameters() if not is_head(name, head)}
    else:
        frozen = _leading_layers(net, int(freeze))
    count = 0
    for name, param in net.named_parameters():
        if name in frozen:
            param.requires_grad_(False)
            count += param.numel()
    return count


def _leading_layers(net: nn.Module, n: int) -> set[str]:
    """Parameters of the first n conv/linear layers and the norm layers after them (before layer n+1)."""
    weight_layers = 0
    names: set[str] = set()
    for name, mod in net.named_modules():
        own = [f"{name}.{p}" if name else p for p, _ in mod.named_parameters(recurse=False)]
        if not own:
            continue
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            weight_layers += 1
        if weight_layers > n:
            break
        names.update(own)
    total = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in net.modules())
    if n >= total:
        raise FinetuneError(f"model.freeze={n}: the net has {total} weight layers; freeze fewer (or backbone)")
    return names


def head_parameters(net: nn.Module) -> set[str]:
    """Names of the head's parameters (optimizer.backbone_lr_scale applies to all the others)."""
    head = head_name(net)
    return {name for name, _ in net.named_parameters() if is_head(name, head)}
