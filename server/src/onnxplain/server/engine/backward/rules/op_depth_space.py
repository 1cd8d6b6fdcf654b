"""VJP rules of DepthToSpace and SpaceToDepth. Both only permute elements, so each VJP is the inverse
permutation: SpaceToDepth undoes DepthToSpace in DCR mode and the other way round; CRD mode is undone by its
Reshape-Transpose-Reshape written out backwards."""

from __future__ import annotations

from onnxplain.server.engine.backward.context import BackwardContext
from onnxplain.server.engine.backward.rules._static import static_dims
from onnxplain.server.engine.backward.rules.registry import ForwardNode, Gradients, vjp

# DepthToSpace CRD: [N, C/b², b, b, H, W] -> this permutation -> [N, C/b², H·b, W·b].
_CRD_PERMUTATION = (0, 1, 4, 2, 5, 3)


@vjp("DepthToSpace")
def depth_to_space(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    block = node.attrs["blocksize"]
    if node.attrs.get("mode", "DCR") == "DCR":
        return [ctx.op("SpaceToDepth", [grads[0]], blocksize=block)]
    channels, height, width = static_dims(ctx, node.input(0), [1, 2, 3])
    inverse = [_CRD_PERMUTATION.index(axis) for axis in range(6)]
    blocks = ctx.op("Reshape", [grads[0], ctx.ints([0, channels // block**2, height, block, width, block])])
    moved = ctx.op("Transpose", [blocks], perm=inverse)
    return [ctx.op("Reshape", [moved, ctx.ints([0, channels, height, width])])]


@vjp("SpaceToDepth")
def space_to_depth(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    return [ctx.op("DepthToSpace", [grads[0]], blocksize=node.attrs["blocksize"], mode="DCR")]
