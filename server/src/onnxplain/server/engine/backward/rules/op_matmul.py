"""VJP rule of MatMul with numpy semantics: batched, batch axes broadcasting, and rank-1 operands (a vector A is
a [1, K] matrix, a vector B a [K, 1] one, and the output drops that axis).

dA = g·Bᵀ and dB = Aᵀ·g on the matrix axes, then summed over the batch axes the operand was broadcast along. The
transposes are explicit Transposes of the last two axes: Transpose without perm reverses every axis.
"""

from __future__ import annotations

from onnxplain.server.engine.backward.context import BackwardContext, Shape, UnknownShape
from onnxplain.server.engine.backward.rules.registry import ForwardNode, Gradients, vjp


@vjp("MatMul")
def matmul(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    a, b = node.inputs
    y = node.outputs[0]
    rank_a, rank_b = ctx.rank(a), ctx.rank(b)
    out_shape = ctx.shape(y)
    if out_shape is None:
        raise UnknownShape(y, out_shape)
    # The output with the axes a vector operand dropped put back: batch + [M, N].
    full_rank = max(rank_a, rank_b, 2)
    dropped = [axis for axis, rank in ((full_rank - 2, rank_a), (full_rank - 1, rank_b)) if rank == 1]
    g = ctx.op("Unsqueeze", [grads[0], ctx.ints(dropped)]) if dropped else grads[0]
    batch = out_shape[: full_rank - 2]
    da = db = None
    if ctx.needs(a):
        da = _sum_to_operand(ctx, ctx.op("MatMul", [g, _transposed_matrix(ctx, b, vector_axis=0)]), a, batch)
    if ctx.needs(b):
        db = _sum_to_operand(ctx, ctx.op("MatMul", [_transposed_matrix(ctx, a, vector_axis=1), g]), b, batch)
    return [da, db]


def _transposed_matrix(ctx: BackwardContext, operand: str, vector_axis: int) -> str:
    """The operand's matrices transposed. A vector's transposed matrix is the vector with a unit axis: [K, 1] for
    A (vector_axis=1), [1, K] for B (vector_axis=0)."""
    rank = ctx.rank(operand)
    if rank == 1:
        return ctx.op("Unsqueeze", [operand, ctx.ints([vector_axis])])
    perm = [*range(rank - 2), rank - 1, rank - 2]
    return ctx.op("Transpose", [operand], perm=perm)


def _sum_to_operand(ctx: BackwardContext, grad: str, operand: str, batch: Shape) -> str:
    """`grad` (shape batch + matrix) summed over the batch axes the operand lacks or broadcast from 1, then
    reshaped to the operand's shape when the rank changed."""
    rank = ctx.rank(operand)
    own_batch = (ctx.shape(operand) or ())[:-2]
    lead = len(batch) - len(own_batch)
    axes = [*range(lead), *(lead + i for i, d in enumerate(own_batch) if d == 1 and batch[lead + i] != 1)]
    grad = ctx.reduce_sum(grad, axes)
    return ctx.reshape_like(grad, operand) if lead or rank == 1 else grad
