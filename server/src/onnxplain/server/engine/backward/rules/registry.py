"""The VJP rule registry: one rule per ONNX op type, registered with @vjp and looked up by op type.

A rule receives the context, the forward node (attributes decoded once, with the ONNX defaults filled in by the rule
itself) and the gradients of the node's outputs (None for an output nothing downstream differentiates), and returns
the gradient of each input (None where it is not needed or not defined, e.g. weights and integer shapes). Rules
return gradients only for inputs `ctx.needs`; computing the others would waste work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import onnx
from onnx import helper

from onnxplain.server.engine.backward.context import BackwardContext


@dataclass(frozen=True)
class ForwardNode:
    """A forward node as rules see it: names and decoded attributes, no protobuf handling in rules."""

    proto: onnx.NodeProto
    attrs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, proto: onnx.NodeProto) -> ForwardNode:
        attrs = {attr.name: _decoded(helper.get_attribute_value(attr)) for attr in proto.attribute}
        return cls(proto, attrs)

    @property
    def op_type(self) -> str:
        return self.proto.op_type

    @property
    def name(self) -> str:
        return self.proto.name

    @property
    def inputs(self) -> Sequence[str]:
        return self.proto.input

    @property
    def outputs(self) -> Sequence[str]:
        return self.proto.output

    def input(self, index: int) -> str:
        """The input name, or "" when the optional input is absent."""
        return self.proto.input[index] if index < len(self.proto.input) else ""


Gradients = Sequence[str | None]
Rule = Callable[[BackwardContext, ForwardNode, Gradients], list[str | None]]

RULES: dict[str, Rule] = {}


def vjp(*op_types: str) -> Callable[[Rule], Rule]:
    """Register the decorated function as the VJP rule of these op types."""

    def register(rule: Rule) -> Rule:
        for op_type in op_types:
            if op_type in RULES:
                raise ValueError(f"a VJP rule for {op_type} is registered twice")
            RULES[op_type] = rule
        return rule

    return register


def rule_for(op_type: str) -> Rule | None:
    return RULES.get(op_type)


def _decoded(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [_decoded(v) for v in value]
    return value
