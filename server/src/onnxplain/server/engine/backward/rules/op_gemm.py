"""VJP rule of Gemm, y = alpha·A'·B' + beta·C with A' = A or Aᵀ (transA) and B' = B or Bᵀ (transB).

Each operand's gradient is one Gemm whose trans flags absorb the transposes, so no Transpose node is emitted:
dA' = alpha·g·B'ᵀ and dB' = alpha·A'ᵀ·g, transposed back when the operand was. PyTorch's Linear exports transB=1,
where dA = Gemm(g, W).
"""

from __future__ import annotations

from onnxplain.server.engine.backward.context import BackwardContext
from onnxplain.server.engine.backward.rules.registry import ForwardNode, Gradients, vjp


@vjp("Gemm")
def gemm(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    a, b, c = node.input(0), node.input(1), node.input(2)
    g = grads[0]
    trans_a, trans_b = node.attrs.get("transA", 0), node.attrs.get("transB", 0)
    alpha, beta = node.attrs.get("alpha", 1.0), node.attrs.get("beta", 1.0)
    da = db = dc = None
    if ctx.needs(a):
        # transA=0: alpha·g·B'ᵀ; transA=1: (alpha·g·B'ᵀ)ᵀ = alpha·B'·gᵀ.
        if trans_a:
            da = ctx.op("Gemm", [b, g], transA=trans_b, transB=1, alpha=alpha)
        else:
            da = ctx.op("Gemm", [g, b], transB=1 - trans_b, alpha=alpha)
    if ctx.needs(b):
        # transB=0: alpha·A'ᵀ·g; transB=1: (alpha·A'ᵀ·g)ᵀ = alpha·gᵀ·A'.
        if trans_b:
            db = ctx.op("Gemm", [g, a], transA=1, transB=trans_a, alpha=alpha)
        else:
            db = ctx.op("Gemm", [a, g], transA=1 - trans_a, alpha=alpha)
    if c and ctx.needs(c):
        dc = ctx.unbroadcast(g, c, node.outputs[0])
        if beta != 1.0:
            dc = ctx.op("Mul", [dc, ctx.scalar(beta, c)])
    return [da, db, dc]
