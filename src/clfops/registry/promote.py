"""Promotion: `clfops promote` (gates, aliases) and `clfops models`; a new version is register.py's.

Aliases only, any name MLflow accepts (MLflow's stages are deprecated); `production` must hold `staging` first.
A gate is `metric OP number` (OP one of >= <= > < ==), evaluated on the metrics of the run that produced
the version, by the names of README.md's metric table; older names (`eval/accuracy`) are read as today's
(`eval/acc`) on runs old and new (tracking/metric_names.py). Gates on `eval/*` use what `clfops evaluate
--run-id ID --log-mlflow` logged; when a run has not been evaluated, the `test/*` metric training logged on
the same test split stands in (`eval/acc` <- `test/acc`, and the other way round) and the output says so.
Every decision is written to the version's tags (`promotion.<alias>` = passed | failed, and why), so the
registry itself records who got promoted and on what evidence.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from clfops.errors import UserError
from clfops.tracking.metric_names import canonical, documented, same_quantity, upgrade
from clfops.tracking.registry import Registry, alias_problem

_GATE = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(>=|<=|==|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_DECISION = re.compile(r"^promotion\.([\w-]+)$")  # promotion.<alias> = passed | failed (alias: MLflow's \w and -)
DEFAULT_COMPARE_METRIC = "eval/acc"


class PromotionError(UserError):
    """A usage error in register/promote (bad gate, unknown version): one line, exit 2."""


@dataclass(frozen=True)
class Gate:
    metric: str
    op: str
    threshold: float

    def holds(self, value: float) -> bool:
        ops = {">=": value >= self.threshold, "<=": value <= self.threshold, ">": value > self.threshold}
        ops.update({"<": value < self.threshold, "==": value == self.threshold})
        return ops[self.op]

    @property
    def higher_is_better(self) -> bool:
        return self.op in (">=", ">", "==")

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.threshold:g}"


def parse_gate(text: str) -> Gate:
    match = _GATE.match(text)
    if not match:
        raise PromotionError(f"--gate {text!r}: expected METRIC(>=|<=|>|<|==)NUMBER, e.g. 'eval/acc>=0.90'")
    return Gate(match[1], match[2], float(match[3]))


def lookup(metrics: dict[str, float], name: str) -> tuple[str, float] | None:
    """(name used, value) of `name`, or of its stand-in (eval/X <-> test/X); None when neither was logged.
    Old and new names alike, on either side: both are read under today's names."""
    current = upgrade(metrics)
    for candidate in same_quantity(name):
        if candidate in current:
            return candidate, float(current[candidate])
    return None


@dataclass
class Decision:
    name: str
    version: str
    alias: str
    promoted: bool = False
    checks: list[tuple[bool, str]] = field(default_factory=list)  # (passed, what was checked)
    previous: str | None = None  # the version that held the alias before

    @property
    def reason(self) -> str:
        failed = [text for ok, text in self.checks if not ok]
        return "; ".join(failed) if failed else "; ".join(text for _, text in self.checks) or "no gates"


def check_name(name: str) -> None:
    if not name or "'" in name or "\n" in name:
        raise PromotionError(f"model name {name!r}: use letters, digits, '-', '_' or '.'")


def _run_metrics(reg: Registry, run_id: str | None) -> dict[str, float]:
    return dict(reg.run(run_id).data.metrics) if run_id else {}


def _gate_checks(gates: list[Gate], metrics: dict[str, float], run_id: str | None) -> list[tuple[bool, str]]:
    checks = []
    for gate in gates:
        found = lookup(metrics, gate.metric)
        if found is None and run_id and not documented(gate.metric):  # a typo, not a metric still to be logged
            known = ", ".join(sorted(k for k in upgrade(metrics) if k.startswith(("test/", "val/", "eval/"))))
            raise PromotionError(
                f"--gate {gate}: {gate.metric!r} is no metric clfops logs (README: Metrics); run {run_id} has {known}"
            )
        if found is None:
            hint = f"run `clfops evaluate --run-id {run_id} --log-mlflow` first" if run_id else "no run"
            checks.append((False, f"{gate.metric} not logged ({hint})"))
            continue
        used, value = found
        note = "" if used == canonical(gate.metric) else f" (from {used}: not evaluated yet)"
        checks.append((gate.holds(value), f"{gate.metric}={value:.4f} {gate.op} {gate.threshold:g}{note}"))
    return checks


def _compare_checks(
    reg: Registry, name: str, version: Any, gates: list[Gate], compare_to: str, metrics: dict[str, float]
) -> list[tuple[bool, str]]:
    """The candidate must beat (strictly) the version holding `compare_to` on every gated metric."""
    current = reg.alias_version(name, compare_to)
    if current is None:
        return [(True, f"no {compare_to} version yet")]
    if str(current.version) == str(version.version):
        return [(True, f"version {version.version} already holds {compare_to}")]
    mine_all, theirs = upgrade(metrics), upgrade(_run_metrics(reg, current.run_id))
    targets = [(g.metric, g.higher_is_better) for g in gates if g.op != "=="] or [(DEFAULT_COMPARE_METRIC, True)]
    checks = []
    for metric, higher in targets:
        # The same name on both sides, so that eval/* is never compared against a test/* stand-in.
        names = [n for n in same_quantity(metric) if n in mine_all and n in theirs]
        if not names:
            checks.append((False, f"{metric} not logged for both this version and {compare_to} v{current.version}"))
            continue
        mine, other = mine_all[names[0]], theirs[names[0]]
        beats = mine > other if higher else mine < other
        shown = metric if names[0] == canonical(metric) else names[0]  # the user's own spelling where it fits
        checks.append((beats, f"{shown}={mine:.4f} vs {compare_to} v{current.version} {other:.4f}"))
    return checks


def _resolve_version(reg: Registry, name: str, version: str | None, run_id: str | None) -> Any:
    if (version is None) == (run_id is None):
        raise PromotionError("give exactly one of --version and --run-id")
    if version is not None:
        return reg.version(name, version)
    found = reg.versions_of_run(name, str(run_id))
    if not found:
        raise PromotionError(
            f"run {run_id} has no version of {name}: `clfops register --run-id {run_id} --name {name}`"
        )
    return found[-1]


def promote(
    uri: str | None,
    name: str,
    alias: str,
    version: str | None = None,
    run_id: str | None = None,
    gates: list[str] | None = None,
    force: bool = False,
    compare_to: str | None = None,
) -> Decision:
    """Move `alias` to the version if every check holds; tag the version with the decision either way."""
    check_name(name)
    for option, value, to_set in (("--alias", alias, True), ("--compare-to", compare_to, False)):
        problem = alias_problem(value, to_set) if value is not None else None
        if problem:
            raise PromotionError(f"{option} {value}: {problem}")
    parsed = [parse_gate(g) for g in gates or []]
    reg = Registry(uri)
    mv = _resolve_version(reg, name, version, run_id)
    decision = Decision(name, str(mv.version), alias, previous=reg.aliases(name).get(alias))
    metrics = _run_metrics(reg, mv.run_id)
    decision.checks += _gate_checks(parsed, metrics, mv.run_id)
    if alias == "production" and not force:
        staging = reg.aliases(name).get("staging")
        held = staging == str(mv.version)
        decision.checks.append((held, "holds staging" if held else f"does not hold staging (staging: {staging})"))
    if compare_to:
        decision.checks += _compare_checks(reg, name, mv, parsed, compare_to, metrics)
    decision.promoted = all(ok for ok, _ in decision.checks)
    if decision.promoted:
        reg.set_alias(name, alias, decision.version)
    tags = {
        f"promotion.{alias}": "passed" if decision.promoted else "failed",
        f"promotion.{alias}.reason": decision.reason[:5000],
        f"promotion.{alias}.time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if force:
        tags[f"promotion.{alias}.forced"] = "true"
    reg.set_version_tags(name, decision.version, tags)
    return decision


def model_rows(uri: str | None, name: str) -> list[dict[str, str]]:
    """One row per version: aliases, run, key metrics, the last promotion decisions."""
    check_name(name)
    reg = Registry(uri)
    versions = reg.versions(name)
    if not versions:
        raise PromotionError(f"no registered model {name!r} on {reg.uri} (`clfops register` creates it)")
    by_version: dict[str, list[str]] = {}
    for alias, version in reg.aliases(name).items():
        by_version.setdefault(str(version), []).append(alias)
    rows = []
    for mv in reversed(versions):
        metrics = _run_metrics(reg, mv.run_id)
        decisions = [f"{m[1]}:{value}" for key, value in sorted(mv.tags.items()) if (m := _DECISION.match(key))]
        rows.append(
            {
                "version": str(mv.version),
                "aliases": " ".join(sorted(by_version.get(str(mv.version), []))),
                "run": (mv.run_id or "")[:8],
                "accuracy": _metric_cell(metrics, "eval/acc"),
                "macro F1": _metric_cell(metrics, "eval/f1"),
                "created": time.strftime("%m-%d %H:%M", time.localtime(mv.creation_timestamp / 1000)),
                "promotion": " ".join(decisions),
            }
        )
    return rows


def _metric_cell(metrics: dict[str, float], name: str) -> str:
    """`0.9123` from eval/*, `0.9050 (test)` when only training's test/* stand-in was logged."""
    found = lookup(metrics, name)
    if found is None:
        return ""
    return f"{found[1]:.4f}" if found[0] == name else f"{found[1]:.4f} (test)"
