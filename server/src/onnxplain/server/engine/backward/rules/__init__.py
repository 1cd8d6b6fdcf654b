"""VJP rules, one module per op (or per family of ops sharing one formula). Adding an op: write `op_<name>.py` with
a function decorated by `@vjp("OpType")`, import it below, and add its test beside its siblings in
tests/server/engine/backward/rules/."""

from onnxplain.server.engine.backward.rules import (  # noqa: F401  (imported for their @vjp registrations)
    op_activation,
    op_arithmetic,
    op_conv,
    op_conv_transpose,
    op_cumsum,
    op_depth_space,
    op_einsum,
    op_gemm,
    op_lrn,
    op_math,
    op_matmul,
    op_normalization,
    op_pool,
    op_quantize,
    op_reduce,
    op_resize,
    op_select,
    op_shape,
    op_softmax,
)
from onnxplain.server.engine.backward.rules.registry import RULES, ForwardNode, Rule, rule_for, vjp

__all__ = ["RULES", "ForwardNode", "Rule", "rule_for", "vjp"]
