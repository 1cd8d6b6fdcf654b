"""VJP rule: CumSum. Each input element reaches the outputs on its other side, so the gradient is the cumulative
sum of g in the opposite direction, with the same exclusivity (an exclusive sum skips the element itself both ways)."""

from __future__ import annotations

from onnxplain.server.engine.backward.context import BackwardContext
from onnxplain.server.engine.backward.rules.registry import ForwardNode, Gradients, vjp


@vjp("CumSum")
def cumsum(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    # The forward's axis tensor (a 0-d integer, constant or computed) serves the backward as it is.
    reverse = 1 - node.attrs.get("reverse", 0)
    exclusive = node.attrs.get("exclusive", 0)
    return [ctx.op("CumSum", [grads[0], node.input(1)], exclusive=exclusive, reverse=reverse), None]
