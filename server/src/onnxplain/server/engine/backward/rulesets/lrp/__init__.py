"""Layer-wise relevance propagation as rule sets: rules, composites (op group → rule tables) and canonizers."""

from onnxplain.server.engine.backward.rulesets.lrp.composites import (
    COMPOSITE_NAMES,
    DEFAULT_COMPOSITE,
    composite_parameters,
    lrp_ruleset,
)

__all__ = ["COMPOSITE_NAMES", "DEFAULT_COMPOSITE", "composite_parameters", "lrp_ruleset"]
