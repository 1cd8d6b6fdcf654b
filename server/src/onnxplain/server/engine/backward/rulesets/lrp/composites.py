"""LRP composites: tables from op groups to rules, as Zennit's composites map layer types to rules, built from named
parameters so that a request can name one and the rule set's name can key a cache.

Zennit 0.5.1 (`zennit/composites.py`): activations and BatchNorm pass relevance, sums and average pools get Norm,
convolutions the composite's rule, dense layers ε, and the first linear layer its own rule where the composite has one.
"epsilon" is Captum's LRP default instead: the ε rule (ε = 1e-9) on every linear layer and as the Norm stabiliser. It
equals Captum's map where Captum's layers and ours agree: Captum also puts the ε rule on BatchNorm (we fold it into the
layer before, as Zennit does) and on MaxPool (we keep its gradient, as Zennit does; the two differ where a window is all
zeros).

The numbers a request picks (epsilon, gamma, alpha, beta, the z-box bounds) are Parameters, graph inputs fed at run
time, so the rule set's name (the cache key) holds only what shapes the graph: the composite, whether bounds are given
and how many values each holds (one, or one per channel), and for the alpha_beta composite whether beta is 0 (z⁺, which
drops the negative half). One graph then serves every value of the others.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxplain.server.engine.backward.context import Number, Parameter
from onnxplain.server.engine.backward.rules import Rule
from onnxplain.server.engine.backward.rulesets.base import RuleSet
from onnxplain.server.engine.backward.rulesets.lrp import rules
from onnxplain.server.engine.backward.rulesets.lrp.canonizers import CANONIZERS

# Zennit's stabiliser of every rule but the ε rule's own ε.
STABILIZER = 1e-6

PASSED = (
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Elu",
    "Selu",
    "Celu",
    "Clip",
    "Sigmoid",
    "HardSigmoid",
    "Tanh",
    "HardSwish",
    "Gelu",
    "Softplus",
    "Softsign",
    "Mish",
    "ThresholdedRelu",
    "BatchNormalization",
)
AVERAGES = ("AveragePool", "GlobalAveragePool", "ReduceMean")
CONVOLUTIONS = ("Conv", "ConvTranspose")
DENSE = ("Gemm", "MatMul")


@dataclass(frozen=True)
class Composite:
    convolution: Rule
    dense: Rule
    first_layer: Rule | None = None
    norm_stabilizer: Number = STABILIZER

    def overrides(self) -> dict[str, Rule]:
        table: dict[str, Rule] = dict.fromkeys(PASSED, rules.pass_through)
        table.update(dict.fromkeys(AVERAGES, rules.norm(self.norm_stabilizer)))
        table.update(Add=rules.residual_norm(self.norm_stabilizer), Mul=rules.gate, Div=rules.numerator)
        table.update(dict.fromkeys(CONVOLUTIONS, self.convolution))
        table.update(dict.fromkeys(DENSE, self.dense))
        return table


REQUIRED = object()


@dataclass(frozen=True)
class _Recipe:
    """`build` takes the parameters as Parameters (None for bounds left out)."""

    defaults: Mapping[str, Any]
    build: Callable[[dict[str, Any]], Composite]


def _deep_taylor(p: dict[str, Any]) -> Composite:
    """z⁺ on every layer; at the input z^B for bounded pixels, else the w² rule (deep Taylor's rule for inputs in
    ℝᵈ)."""
    bounded = p["low"] is not None
    first = rules.z_box(p["low"], p["high"], STABILIZER) if bounded else rules.w_square(STABILIZER)
    return Composite(rules.z_plus(STABILIZER), rules.z_plus(STABILIZER), first)


RECIPES: dict[str, _Recipe] = {
    "epsilon": _Recipe(
        {"epsilon": 1e-9},
        lambda p: Composite(rules.epsilon(p["epsilon"]), rules.epsilon(p["epsilon"]), None, p["epsilon"]),
    ),
    "epsilon_plus": _Recipe(
        {"epsilon": 1e-6}, lambda p: Composite(rules.z_plus(STABILIZER), rules.epsilon(p["epsilon"]))
    ),
    "epsilon_plus_flat": _Recipe(
        {"epsilon": 1e-6},
        lambda p: Composite(rules.z_plus(STABILIZER), rules.epsilon(p["epsilon"]), rules.flat(STABILIZER)),
    ),
    "epsilon_alpha2_beta1": _Recipe(
        {"epsilon": 1e-6}, lambda p: Composite(rules.alpha_beta(2.0, 1.0, STABILIZER), rules.epsilon(p["epsilon"]))
    ),
    "epsilon_alpha2_beta1_flat": _Recipe(
        {"epsilon": 1e-6},
        lambda p: Composite(
            rules.alpha_beta(2.0, 1.0, STABILIZER), rules.epsilon(p["epsilon"]), rules.flat(STABILIZER)
        ),
    ),
    "epsilon_gamma_box": _Recipe(
        {"epsilon": 1e-6, "gamma": 0.25, "low": REQUIRED, "high": REQUIRED},
        lambda p: Composite(
            rules.gamma(p["gamma"], STABILIZER),
            rules.epsilon(p["epsilon"]),
            rules.z_box(p["low"], p["high"], STABILIZER),
        ),
    ),
    "deep_taylor": _Recipe({"low": None, "high": None}, _deep_taylor),
    "z_plus": _Recipe({}, lambda p: Composite(rules.z_plus(STABILIZER), rules.z_plus(STABILIZER))),
    "alpha_beta": _Recipe({"alpha": 2.0, "beta": 1.0}, lambda p: _alpha_beta(p["alpha"], p["beta"])),
}


def _alpha_beta(alpha: Parameter, beta: Parameter) -> Composite:
    """beta = 0 (so alpha = 1) is z⁺, whose graph has no negative half: a rule set of its own (see `_structure`)."""
    rule = rules.z_plus(STABILIZER) if _is_zero(beta) else rules.alpha_beta(alpha, beta, STABILIZER)
    return Composite(rule, rule)


def _is_zero(parameter: Parameter) -> bool:
    return not np.any(parameter.value)


COMPOSITE_NAMES = tuple(RECIPES)
DEFAULT_COMPOSITE = "epsilon_plus_flat"


def composite_parameters(composite: str) -> tuple[str, ...]:
    """The parameters a composite takes (an unknown composite takes none)."""
    recipe = RECIPES.get(composite)
    return tuple(recipe.defaults) if recipe else ()


def lrp_ruleset(composite: str = DEFAULT_COMPOSITE, **params: Any) -> RuleSet:
    """The LRP rule set of a named composite; parameters left out (or None) take the composite's defaults."""
    recipe = RECIPES.get(composite)
    if recipe is None:
        raise ValueError(f"unknown LRP composite {composite!r}; known: {', '.join(COMPOSITE_NAMES)}")
    unknown = sorted(set(params) - set(recipe.defaults))
    if unknown:
        takes = ", ".join(recipe.defaults) or "no parameters"
        raise ValueError(f"LRP composite {composite!r} takes {takes}; not {', '.join(unknown)}")
    values = {**recipe.defaults, **{key: value for key, value in params.items() if value is not None}}
    missing = [key for key, value in values.items() if value is REQUIRED]
    if missing:
        raise ValueError(f"LRP composite {composite!r} needs {' and '.join(missing)} (the input's value range)")
    parameters = {
        name: None if value is None else Parameter.named(f"lrp_{name}", value)
        for name, value in _checked(values).items()
    }
    built = recipe.build(parameters)
    key = ",".join(filter(None, (_structure(name, parameters[name]) for name in sorted(parameters))))
    return RuleSet(
        f"lrp({composite}{',' if key else ''}{key})",
        overrides=built.overrides(),
        first_layer=built.first_layer,
        canonizers=CANONIZERS,
        relevance=True,
        inputs={p.name: p.value for p in parameters.values() if p is not None},
    )


def _structure(name: str, parameter: Parameter | None) -> str:
    """What a parameter changes in the graph, for the rule set's name ("" when only its value, fed at run time):
    whether a bound is given and its shape (() or (channels,)), and whether β is 0."""
    if name in ("low", "high"):
        return f"{name}={None if parameter is None else parameter.value.shape}"
    if name == "beta" and parameter is not None:
        return "beta=0" if _is_zero(parameter) else "beta>0"
    return ""


def _checked(values: dict[str, Any]) -> dict[str, Any]:
    """Parameters as plain floats (bounds: a float or one per channel), rejected where Zennit rejects them."""
    checked = {name: float(values[name]) for name in ("epsilon", "gamma", "alpha", "beta") if name in values}
    for name, value in checked.items():
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"LRP parameter {name} must be a finite number ≥ 0, not {value}")
    if "alpha" in checked and not math.isclose(checked["alpha"] - checked["beta"], 1.0):
        raise ValueError(f"LRP alpha - beta must be 1 (got alpha={checked['alpha']}, beta={checked['beta']})")
    if "low" in values:
        checked.update(_bounds(values["low"], values["high"]))
    return checked


def _bounds(low: Any, high: Any) -> dict[str, Any]:
    if (low is None) != (high is None):
        raise ValueError("LRP input bounds need both low and high")
    if low is None:
        return {"low": None, "high": None}
    lows, highs = _bound(low), _bound(high)
    if isinstance(lows, tuple) and isinstance(highs, tuple) and len(lows) != len(highs):
        raise ValueError(f"LRP input bounds per channel differ in length (low={lows}, high={highs})")
    if not np.all(np.asarray(lows) < np.asarray(highs)):
        raise ValueError(f"LRP input bounds need low < high (got low={lows}, high={highs})")
    return {"low": lows, "high": highs}


def _bound(value: Any) -> float | tuple[float, ...]:
    """A scalar bound or one per channel."""
    if isinstance(value, numbers.Real):
        return float(value)
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"an LRP input bound is a number or one number per channel, not {value!r}") from error
    if not values:
        raise ValueError("an LRP input bound per channel needs at least one value")
    return values
