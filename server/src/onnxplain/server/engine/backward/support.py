"""Whether each kind of backward walk can run on a model, known at load time so model metadata can say so up front.

Support is decided per walk, not per model: each walk needs rules only for the ops on the path it differentiates,
under its own rule set. The CAM family differentiates from the scores back to the feature map only, so an op
without a rule in the stem does not refuse it; guided backprop, deconvnet and LRP swap some rules, so they are
scanned with their own rule sets. The scan reads the graph without its weights; a rule that refuses an attribute
combination, or a graph ONNX Runtime then refuses, is found when the graph is first built (engine/gradients.py),
and the model remembers it (repository/model.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import onnx

from onnxplain.server.engine.backward.context import Shape
from onnxplain.server.engine.backward.folding import has_shape_ops
from onnxplain.server.engine.backward.path import differentiable_path
from onnxplain.server.engine.backward.prepare import fold_everything_static, infer_shapes, prepare_forward
from onnxplain.server.engine.backward.quantized import dequantize_operators
from onnxplain.server.engine.backward.rules import ForwardNode
from onnxplain.server.engine.backward.rulesets import get_ruleset
from onnxplain.server.engine.backward.rulesets.base import GRADIENT, RuleSet
from onnxplain.server.engine.backward.targets import (
    FeatureMap,
    averages_whole_map,
    default_feature_map,
    explained_tensor,
)

# The walks methods need: the plain input gradient, the ReLU variants, LRP, and the CAM family's feature-map walk;
# and CAM_HEAD, which is no walk but what plain CAM needs of the feature map's head (the gradient of a map read only
# through an average over its positions is the same at every position, and CAM's channel weights assume it).
INPUT_GRADIENT, GUIDED_BACKPROP, DECONVNET, RELEVANCE, FEATURE_MAP, CAM_HEAD = (
    "gradient",
    "guided_backprop",
    "deconvnet",
    "lrp",
    "feature_map",
    "cam_head",
)
_RULE_SETS: Mapping[str, RuleSet] = {
    INPUT_GRADIENT: GRADIENT,
    GUIDED_BACKPROP: get_ruleset("guided_backprop"),
    DECONVNET: get_ruleset("deconvnet"),
    # Every composite maps the same op types to rules; the epsilon composite needs no input range.
    RELEVANCE: get_ruleset("lrp", composite="epsilon"),
}
# LRP has relevance rules for convolutional classifiers only: attention (a Softmax inside the network, a MatMul of
# two activations) and LayerNorm redistribute relevance wrongly under gradient rules and returned NaN or exploding
# maps on vision transformers.
_NO_RELEVANCE_RULE = {"LayerNormalization", "Softmax", "Einsum"}


def support_problems(
    model: onnx.ModelProto, input_name: str, output_name: str, sample_shape: Sequence[int] | None = None
) -> dict[str, str | None]:
    """For each walk (INPUT_GRADIENT, ...), why it cannot run on the model, or None. `sample_shape` (the image's
    shape without the batch, when the model or its config fixes it) lets the scan see the graph the build walks."""
    model = _as_walked(model, input_name, sample_shape)
    target = explained_tensor(model, output_name, probability=False)  # the logits: adds no node
    try:
        _, shapes, dtypes = infer_shapes(model)
    except Exception:  # shape inference failing only loses types and shapes: unknown types count as float
        shapes, dtypes = {}, {}
    problems: dict[str, str | None] = {
        walk: _path_problem(model.graph, [input_name], target, dtypes, ruleset, walk)
        for walk, ruleset in _RULE_SETS.items()
    }
    if problems[RELEVANCE] is None:
        problems[RELEVANCE] = _relevance_problem(model.graph, input_name, target, dtypes)
    feature_map = default_feature_map(model.graph, target, shapes)
    problems[FEATURE_MAP] = (
        "no 4-D feature map feeds the classifier head; name one with the 'layer' parameter"
        if feature_map is None
        else _path_problem(model.graph, [feature_map.tensor], target, dtypes, GRADIENT, INPUT_GRADIENT)
    )
    if feature_map is not None:  # without one, FEATURE_MAP already refuses plain CAM
        problems[CAM_HEAD] = _cam_head_problem(model.graph, feature_map, target, dtypes, shapes)
    return problems


def _as_walked(model: onnx.ModelProto, input_name: str, sample_shape: Sequence[int] | None) -> onnx.ModelProto:
    """What the build will walk, as far as it can be known: with an image size, the build's own preparation
    (prepare.prepare_forward: quantized operators rewritten, shape arithmetic and static If conditions folded, a probe
    run measuring what shape inference cannot); without one, the rewriting and folding that need no size. A copy,
    made only when there is something to rewrite; the graph as it is when the preparation fails (a model whose
    weights are in external files cannot be probed)."""
    quantized = any(_is_quantized_operator(node) for node in model.graph.node)
    if not quantized and not has_shape_ops(model):
        return model
    walked = onnx.ModelProto()
    walked.CopyFrom(model)
    try:
        if sample_shape is not None:
            return prepare_forward(walked, input_name, sample_shape)
        if quantized:
            dequantize_operators(walked)
        fold_everything_static(walked)
    except Exception:  # the build then reports what it meets, and the model remembers it
        return model
    return walked


def _is_quantized_operator(node: onnx.NodeProto) -> bool:
    return node.op_type.startswith("QLinear") or node.op_type in {"QGemm", "ConvInteger", "MatMulInteger"}


def _path_problem(
    graph: onnx.GraphProto, sources: list[str], target: str, dtypes: dict[str, int], ruleset: RuleSet, name: str
) -> str | None:
    """Why the walk from `sources` to the target cannot run under `ruleset` (called `name` in the reason), or None."""
    nodes, on_path = differentiable_path(graph, sources, target, dtypes)
    if target not in on_path and target not in sources:
        return f"the scores ({target!r}) do not depend on {sources[0]!r} through ops a backward walk can follow"
    missing = [
        f"{node.op_type} (node {node.name!r})"
        for node in nodes
        if ruleset.rule(ForwardNode.of(node), first_layer=False) is None
    ]
    if not missing:
        return None
    return f"no {name} rule for op {', '.join(missing[:5])}" + (" and more" if len(missing) > 5 else "")


def _cam_head_problem(
    graph: onnx.GraphProto, feature_map: FeatureMap, target: str, dtypes: dict[str, int], shapes: dict[str, Shape]
) -> str | None:
    """Why plain CAM is not defined on the default feature map (the scores read it other than through an average
    over its positions), or None."""
    nodes, _ = differentiable_path(graph, [feature_map.tensor], target, dtypes)
    constants = {init.name: init for init in graph.initializer}
    readers = [node for node in nodes if feature_map.tensor in node.input]
    other = next((node for node in readers if not averages_whole_map(node, feature_map, shapes, constants)), None)
    if other is None:
        return None
    return (
        f"cam needs a global-average-pool + dense head after the feature map {feature_map.tensor!r}; the scores "
        f"also read it through {other.op_type} (node {other.name!r}); use grad_cam"
    )


def _relevance_problem(graph: onnx.GraphProto, input_name: str, target: str, dtypes: dict[str, int]) -> str | None:
    nodes, on_path = differentiable_path(graph, [input_name], target, dtypes)
    for node in nodes:
        attention = node.op_type == "MatMul" and all(name in on_path for name in node.input[:2])
        if node.op_type in _NO_RELEVANCE_RULE or attention:
            return (
                f"LRP has no relevance rule for attention or LayerNorm yet ({node.op_type} node {node.name!r}): "
                "transformer blocks would get wrong relevance"
            )
    return None
