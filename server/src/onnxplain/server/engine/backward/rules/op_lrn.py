"""VJP rule: LRN (AlexNet, GoogLeNet). y = x·s^-beta with s = bias + alpha/n·Σ_window x², the window running over
the channels [c - ⌊(n-1)/2⌋, c + ⌈(n-1)/2⌉] (clipped at the ends), so

    dx = g·s^-beta - (2·alpha·beta/n)·x·Wᵀ(g·x·s^(-beta-1)),

where W sums each channel's window and Wᵀ sums, for each channel, the windows it lies in. Both are 1x1 convolutions
with a constant [C, C] band matrix, which needs only the channel count to be static; s is recomputed from x (x/y
fails at x = 0)."""

from __future__ import annotations

import numpy as np

from onnxplain.server.engine.backward.context import BackwardContext
from onnxplain.server.engine.backward.rules._static import static_dims
from onnxplain.server.engine.backward.rules.registry import ForwardNode, Gradients, vjp


@vjp("LRN")
def lrn(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    x, g = node.input(0), grads[0]
    size = node.attrs["size"]
    alpha, beta, bias = node.attrs.get("alpha", 1e-4), node.attrs.get("beta", 0.75), node.attrs.get("bias", 1.0)
    band = _window_matrix(static_dims(ctx, x, [1])[0], size, ctx.rank(x) - 2)

    def channel_windows(tensor: str, weights: np.ndarray) -> str:
        return ctx.op("Conv", [tensor, ctx.constant(weights, like=x, hint="lrn_window")])

    windowed = channel_windows(ctx.op("Mul", [x, x]), band)
    s = ctx.op("Add", [ctx.op("Mul", [windowed, ctx.scalar(alpha / size, x)]), ctx.scalar(bias, x)])
    damping = ctx.op("Pow", [s, ctx.scalar(-beta, x)])  # s^-beta
    inner = ctx.op("Div", [ctx.op("Mul", [ctx.op("Mul", [g, x]), damping]), s])  # g·x·s^(-beta-1)
    spread = channel_windows(inner, band.transpose(1, 0, *range(2, band.ndim)))
    cross = ctx.op("Mul", [ctx.op("Mul", [x, spread]), ctx.scalar(2.0 * alpha * beta / size, x)])
    return [ctx.op("Sub", [ctx.op("Mul", [g, damping]), cross])]


def _window_matrix(channels: int, size: int, spatial_rank: int) -> np.ndarray:
    """W as a 1x1 convolution weight [C_out, C_in, 1, …]: W[c, j] = 1 when channel j is in channel c's window."""
    offsets = np.arange(channels)[None, :] - np.arange(channels)[:, None]  # j - c
    inside = (offsets >= -((size - 1) // 2)) & (offsets <= size // 2)
    return inside.astype(np.float64).reshape(channels, channels, *[1] * spatial_rank)
