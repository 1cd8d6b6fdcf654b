"""The backward-graph builder: append to a forward graph the VJP nodes that compute seedᵀ·∂target/∂tensor for the
requested tensors, in standard ONNX ops, so ONNX Runtime runs forward and backward in one session.

The seed is a graph input shaped like the target; since a VJP is linear in its seed, one-hot rows give per-class
gradients and weighted rows give gradients of class combinations, many at once along the batch axis.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import onnx
from onnx import helper

from onnxplain.server.engine.backward.context import BackwardContext, Shape, UnknownShape
from onnxplain.server.engine.backward.graph import model_opset
from onnxplain.server.engine.backward.path import differentiable_path
from onnxplain.server.engine.backward.prepare import ShapeProbe, infer_shapes
from onnxplain.server.engine.backward.rules import ForwardNode
from onnxplain.server.engine.backward.rulesets.base import GRADIENT, LINEAR_OPS, RuleSet

SEED_INPUT = "onnxplain_seed"


class MissingRule(ValueError):
    """A node on the path from input to target has no VJP rule (or its rule cannot handle the node)."""

    def __init__(self, op_type: str, node_name: str, detail: str = "") -> None:
        self.op_type = op_type
        self.node_name = node_name
        reason = f": {detail}" if detail else ""
        super().__init__(f"no gradient for op {op_type} (node {node_name!r}){reason}")


@dataclass(frozen=True)
class BackwardGraph:
    """The forward+backward model and the names of what it takes and gives."""

    model: onnx.ModelProto
    seed_input: str
    seed_shape: Shape
    target_output: str
    # wrt tensor -> graph output holding seedᵀ·∂target/∂tensor
    gradients: dict[str, str]
    # readout tensor -> graph output holding its forward value
    readouts: dict[str, str]
    # Graph inputs holding rule parameters (context.Parameter), to feed with each run's values.
    parameters: tuple[str, ...] = ()


def differentiate(
    model: onnx.ModelProto,
    target: str,
    wrt: Sequence[str],
    *,
    ruleset: RuleSet = GRADIENT,
    readouts: Sequence[str] = (),
    probe: ShapeProbe | None = None,
) -> BackwardGraph:
    """Add the backward nodes to `model` (modified in place and returned inside the result).

    `wrt` are the tensors to return gradients of (graph inputs or intermediate tensors); `readouts` are tensors to
    return as they are (a layer's activation next to its gradient). The target's gradient is seeded by the new input
    SEED_INPUT, shaped like the target. `probe` lets shape inference measure shapes it cannot infer.
    """
    for canonize in ruleset.canonizers:
        canonize(model)
    model, shapes, dtypes = infer_shapes(model, probe)
    graph = model.graph
    nodes, on_path = differentiable_path(graph, wrt, target, dtypes)
    ctx = BackwardContext(graph, model_opset(model), shapes, dtypes, on_path)
    grads: dict[str, list[str]] = defaultdict(list)
    grads[target].append(SEED_INPUT)
    first_linear = _first_linear(nodes, wrt)
    for proto in reversed(nodes):
        output_grads = [ctx.sum(grads[out]) if grads.get(out) else None for out in proto.output]
        if all(g is None for g in output_grads):
            continue
        node = ForwardNode.of(proto)
        rule = ruleset.rule(node, first_layer=proto is first_linear)
        if rule is None:
            raise MissingRule(node.op_type, node.name)
        try:
            input_grads = rule(ctx, node, output_grads)
        except (UnknownShape, NotImplementedError) as error:
            raise MissingRule(node.op_type, node.name, str(error)) from error
        for name, grad in zip(node.inputs, input_grads, strict=False):
            if grad is not None and name and ctx.needs(name):
                grads[name].append(grad)
    gradients = _set_outputs(ctx, graph, target, wrt, readouts, grads, shapes, dtypes)
    return BackwardGraph(
        model=model,
        seed_input=SEED_INPUT,
        seed_shape=shapes.get(target, ()),
        target_output=target,
        gradients=gradients,
        readouts={name: name for name in readouts},
        parameters=ctx.parameter_inputs,
    )


def _first_linear(nodes: list[onnx.NodeProto], wrt: Sequence[str]) -> onnx.NodeProto | None:
    """The first Conv/Gemm/MatMul fed (through any ops) by the first wrt tensor: LRP's input layer."""
    reached = {wrt[0]} if wrt else set()
    for node in nodes:
        if any(name in reached for name in node.input):
            if node.op_type in LINEAR_OPS:
                return node
            reached.update(node.output)
    return None


def _set_outputs(
    ctx: BackwardContext,
    graph: onnx.GraphProto,
    target: str,
    wrt: Sequence[str],
    readouts: Sequence[str],
    grads: dict[str, list[str]],
    shapes: dict[str, Shape],
    dtypes: dict[str, int],
) -> dict[str, str]:
    """Replace the graph's outputs by the target, the readouts and the gradients (returned: wrt tensor -> output);
    ONNX Runtime then prunes every forward node the new outputs do not need (a trailing Softmax when the logits are
    the target). Gradients get fixed names (gradient_output) by renaming the tensor their last rule produced: an
    Identity would be one more op version for the CUDA provider to match."""
    seed_type = dtypes.get(target, onnx.TensorProto.FLOAT)
    graph.input.append(helper.make_tensor_value_info(SEED_INPUT, seed_type, _dims(shapes.get(target))))
    del graph.output[:]
    producers = {out: node for node in graph.node for out in node.output}
    gradients = {}
    for name in wrt:
        terms = grads.get(name)
        if not terms:
            raise MissingRule("-", name, "the target does not depend on this tensor")
        gradient, output = ctx.sum(terms), gradient_output(name)
        if gradient.startswith("onnxplain_bw/") and gradient in producers and gradient not in gradients.values():
            _rename(graph, gradient, output)
        else:  # the seed itself, or a tensor already returned under another name
            graph.node.append(helper.make_node("Identity", [gradient], [output]))
        gradients[name] = output
    values = {name: name for name in (target, *readouts)}
    for output, like in {**values, **{out: name for name, out in gradients.items()}}.items():
        graph.output.append(helper.make_tensor_value_info(output, dtypes.get(like, seed_type), _dims(shapes.get(like))))
    return gradients


def gradient_output(name: str) -> str:
    """The graph output holding the gradient of tensor `name`."""
    return f"onnxplain_grad/{name}"


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name == old:
                node.input[index] = new
        for index, name in enumerate(node.output):
            if name == old:
                node.output[index] = new


def _dims(shape: Shape | None) -> list[int | str] | None:
    if shape is None:
        return None
    return [d if d is not None else f"d{i}" for i, d in enumerate(shape)]
