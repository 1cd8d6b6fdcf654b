"""The p-norm's gradient, shared by ReduceL2 and the Lp pools: y = (Σ|x|^p)^(1/p) over some elements, so
∂y/∂x = sign(x)·|x|^(p-1)·y^(1-p). It is split into an output-shaped factor, g·y^(1-p), which the pools spread back
over their windows, and an input-shaped one, sign(x)·|x|^(p-1). Where y = 0 the gradient is 0, as torch's norm
backward gives, rather than 0·inf."""

from __future__ import annotations

from onnxplain.server.engine.backward.context import BackwardContext


def output_factor(ctx: BackwardContext, grad: str, norm: str, p: float, like: str) -> str:
    """g·y^(1-p), 0 where y = 0."""
    zero = ctx.scalar(0.0, like)
    scaled = ctx.op("Div", [grad, norm if p == 2 else ctx.op("Pow", [norm, ctx.scalar(p - 1.0, like)])])
    return ctx.op("Where", [ctx.op("Greater", [norm, zero]), scaled, zero])


def input_factor(ctx: BackwardContext, x: str, p: float) -> str:
    """sign(x)·|x|^(p-1)."""
    if p == 2:
        return x
    sign = ctx.op("Sign", [x])
    if p == 1:
        return sign
    return ctx.op("Mul", [sign, ctx.op("Pow", [ctx.op("Abs", [x]), ctx.scalar(p - 1.0, x)])])
