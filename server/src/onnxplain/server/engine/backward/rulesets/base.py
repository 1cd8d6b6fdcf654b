"""A rule set: which VJP rule each forward node gets. The plain gradient uses the registry's rules; guided
backprop, deconvnet and the LRP composites swap the rules of some op types (and of the first layer), the way
Zennit's composites map layer types to rules. Rule sets are built from named parameters, so a request can name one
and a cache can key on it; numeric parameters are graph inputs (`inputs`), fed at run time and not part of the key."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxplain.server.engine.backward.rules import ForwardNode, Rule, rule_for

# Ops whose first occurrence on the input's path is "the first layer" (LRP's input-layer rule applies there).
LINEAR_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})

Canonizer = Callable[[onnx.ModelProto], None]


@dataclass(frozen=True)
class RuleSet:
    """`name` identifies the graph the rule set builds (the cache key: its structure, not the values of `inputs`);
    `overrides` maps op types to rules; `first_layer` replaces the rule of the first linear layer on the input's path;
    `canonizers` rewrite the forward graph before the walk (e.g. fold BatchNormalization into the convolution before
    it); `inputs` are the values of the parameter inputs (context.Parameter) the rules read, to feed each run."""

    name: str
    overrides: Mapping[str, Rule] = field(default_factory=dict)
    first_layer: Rule | None = None
    canonizers: tuple[Canonizer, ...] = ()
    # True when the walk carries relevance (LRP) instead of a gradient: methods then read the input's "gradient"
    # as the attribution itself.
    relevance: bool = False
    inputs: Mapping[str, np.ndarray] = field(default_factory=dict)

    def rule(self, node: ForwardNode, first_layer: bool) -> Rule | None:
        if first_layer and self.first_layer is not None:
            return self.first_layer
        return self.overrides.get(node.op_type) or rule_for(node.op_type)

    def __hash__(self) -> int:
        return hash(self.name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RuleSet) and other.name == self.name


GRADIENT = RuleSet("gradient")
