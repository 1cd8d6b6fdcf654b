"""Fold what is static once the image size is fixed: constant subgraphs, and the shape arithmetic exporters leave in
the graph (Shape -> Gather -> Sub -> Div -> Cast -> Concat for TF-style "SAME" padding, ConstantOfShape-Concat-Slice
for F.pad), so that rules see constant pads, sizes and axes instead of tensors computed at run time.

A tensor is static when it does not depend on the batch size, the one dimension left unknown. The shape arithmetic
is evaluated, one node at a time with ONNX's reference implementation, once per trial batch size, with the shapes
shape inference (or a probe run) gave at that batch size; every tensor that comes out the same for each trial batch
is replaced by an initializer. Data never enters: a Shape node only reads its input's shape at the trial batch. A
dimension is never assumed to be the batch: a Swin's attention windows are batch x windows along one axis, and a
shape read there divided by the windows is the batch, not a constant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxplain.server.engine.backward.graph import model_opset, subgraphs

# Results are folded up to this many elements; larger ones are weights, which folding would only copy.
FOLD_LIMIT = 1 << 16
# Batch sizes each shape computation is evaluated at: a tensor equal for all of them does not depend on the batch.
# Three sizes, so that thresholds (Min(batch, 2), Where(batch > 1)) cannot make a batch-dependent tensor look static.
TRIAL_BATCHES = (1, 2, 3)
_NOT_FOLDED = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
_SHAPE_OPS = {"Shape", "Size"}


# The shapes of tensors at one trial batch size, every dimension known.
TrialShapes = Mapping[str, tuple[int, ...]]


def fold_static(model: onnx.ModelProto, shapes: Sequence[TrialShapes] | None = None) -> bool:
    """Replace the nodes whose outputs are static by initializers holding them; returns whether any was folded.
    `shapes` holds the tensors' shapes at each of TRIAL_BATCHES (prepare.trial_shapes); without it, only subgraphs of
    constants fold."""
    graph = model.graph
    opset = model_opset(model)
    initializers = {init.name: init for init in graph.initializer}
    trials: Sequence[TrialShapes] = [{}] if shapes is None else shapes
    values: list[dict[str, np.ndarray]] = [{} for _ in trials]
    kept = []
    for node in graph.node:
        branch = _static_branch(node, values, initializers)
        if branch is not None:
            kept.extend(_inlined(graph, node, branch))
            continue
        outputs = _evaluate(node, trials, values, initializers, opset)
        if outputs is None:
            kept.append(node)
            continue
        for run, computed in zip(values, outputs, strict=True):
            run.update(zip([name for name in node.output if name], computed, strict=True))
        if not all(_same(outputs[0], other) for other in outputs[1:]):
            kept.append(node)  # depends on the batch: stays, but later nodes may still fold through it
            continue
        for name, value in zip([name for name in node.output if name], outputs[0], strict=True):
            graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    folded = [id(node) for node in kept] != [id(node) for node in graph.node]
    if folded:
        del graph.node[:]
        graph.node.extend(kept)
    return folded


def shape_sources(model: onnx.ModelProto) -> list[str]:
    """The tensors whose shapes folding reads: the inputs of Shape and Size nodes."""
    return [node.input[0] for node in model.graph.node if node.op_type in _SHAPE_OPS and node.input]


def has_shape_ops(model: onnx.ModelProto) -> bool:
    """Whether any Shape, Size or If node is left to fold once shapes are known."""
    return any(node.op_type in _SHAPE_OPS or node.op_type == "If" for node in model.graph.node)


def _static_branch(
    node: onnx.NodeProto, values: list[dict[str, np.ndarray]], initializers: dict[str, onnx.TensorProto]
) -> onnx.GraphProto | None:
    """The branch an If takes whatever the batch (torch's legacy exporter checks ranks and sizes with If), or None
    when its condition depends on the data or the batch."""
    if node.op_type != "If" or node.domain not in ("", "ai.onnx"):
        return None
    condition = node.input[0]
    if condition in initializers:
        taken = {bool(numpy_helper.to_array(initializers[condition]).reshape(-1)[0])}
    elif condition in values[0]:
        taken = {bool(np.asarray(run[condition]).reshape(-1)[0]) for run in values}
    else:
        return None
    if len(taken) != 1:
        return None
    name = "then_branch" if taken.pop() else "else_branch"
    return next(attribute.g for attribute in node.attribute if attribute.name == name)


def _inlined(graph: onnx.GraphProto, node: onnx.NodeProto, branch: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The branch's nodes in place of the If (its constants moved into the graph), and Identity nodes giving the
    If's outputs the branch's results. Branch tensors keep their names: ONNX names are unique across scopes."""
    graph.initializer.extend(branch.initializer)
    results = [
        onnx.helper.make_node("Identity", [inner.name], [outer], name=f"{node.name or outer}_inlined")
        for inner, outer in zip(branch.output, node.output, strict=True)
        if outer
    ]
    return [*branch.node, *results]


def _evaluate(
    node: onnx.NodeProto,
    trials: Sequence[TrialShapes],
    values: list[dict[str, np.ndarray]],
    initializers: dict[str, onnx.TensorProto],
    opset: int,
) -> list[list[np.ndarray]] | None:
    """The node's outputs for each trial batch size, or None when they cannot be computed without data."""
    if node.domain not in ("", "ai.onnx") or node.op_type in _NOT_FOLDED or next(subgraphs(node), None) is not None:
        return None
    if node.op_type in _SHAPE_OPS:
        source = node.input[0]
        if source in initializers:
            return _shape_values(node, [tuple(initializers[source].dims)] * len(trials))
        return _shape_values(node, [shapes.get(source) for shapes in trials])
    names = [name for name in node.input if name]
    if not all(name in values[0] or _small_constant(initializers.get(name)) for name in names):
        return None
    results = []
    for run in values:
        inputs = {name: run[name] if name in run else numpy_helper.to_array(initializers[name]) for name in names}
        computed = _run_node(node, inputs, opset)
        if computed is None:
            return None
        results.append(computed)
    return results


def _shape_values(node: onnx.NodeProto, shapes: list[tuple[int, ...] | None]) -> list[list[np.ndarray]] | None:
    """Shape's or Size's output at each trial batch size, from the input's shape there (None where not known)."""
    if any(shape is None for shape in shapes):
        return None
    start = next((a.i for a in node.attribute if a.name == "start"), 0)
    end = next((a.i for a in node.attribute if a.name == "end"), None)
    return [
        [np.asarray(list(dims[start:end]) if node.op_type == "Shape" else np.prod(dims), np.int64)] for dims in shapes
    ]


def _small_constant(tensor: onnx.TensorProto | None) -> bool:
    return tensor is not None and int(np.prod(tensor.dims)) <= FOLD_LIMIT


def _run_node(node: onnx.NodeProto, inputs: dict[str, np.ndarray], opset: int) -> list[np.ndarray] | None:
    if sum(value.size for value in inputs.values()) > FOLD_LIMIT:
        return None
    try:
        outputs = ReferenceEvaluator(_single_node_model(node, inputs, opset)).run(None, inputs)
    except Exception:  # an op the reference implementation lacks, or cannot run on these values: left in place
        return None
    outputs = [np.asarray(value) for value in outputs]
    return outputs if all(value.size <= FOLD_LIMIT for value in outputs) else None


def _single_node_model(node: onnx.NodeProto, inputs: dict[str, np.ndarray], opset: int) -> onnx.ModelProto:
    graph = onnx.helper.make_graph(
        [node],
        "fold",
        [
            onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(value.dtype), value.shape)
            for name, value in inputs.items()
        ],
        [onnx.helper.make_empty_tensor_value_info(name) for name in node.output if name],
    )
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b, strict=True))
