"""Named rule sets for the backward-graph builder: the plain gradient, guided backprop, deconvnet and LRP composites.
`get_ruleset` builds one from a name and parameters; its `name` encodes what shapes the graph, so it can key a cache,
and its `inputs` hold the numeric parameters' values, fed to the graph at run time."""

from __future__ import annotations

from typing import Any

from onnxplain.server.engine.backward.rulesets.base import GRADIENT, RuleSet
from onnxplain.server.engine.backward.rulesets.lrp import (
    COMPOSITE_NAMES,
    DEFAULT_COMPOSITE,
    composite_parameters,
    lrp_ruleset,
)
from onnxplain.server.engine.backward.rulesets.relu_variants import DECONVNET, GUIDED_BACKPROP

_FIXED = {ruleset.name: ruleset for ruleset in (GRADIENT, GUIDED_BACKPROP, DECONVNET)}
RULESET_NAMES = (*_FIXED, "lrp")


def get_ruleset(name: str, **params: Any) -> RuleSet:
    """The rule set called `name`; "lrp" takes `composite` (one of COMPOSITE_NAMES) and that composite's parameters."""
    if name == "lrp":
        return lrp_ruleset(**params)
    if name not in _FIXED:
        raise ValueError(f"unknown rule set {name!r}; known: {', '.join(RULESET_NAMES)}")
    if params:
        raise ValueError(f"rule set {name!r} takes no parameters; got {', '.join(sorted(params))}")
    return _FIXED[name]


__all__ = ["COMPOSITE_NAMES", "DEFAULT_COMPOSITE", "RULESET_NAMES", "RuleSet", "composite_parameters", "get_ruleset"]
