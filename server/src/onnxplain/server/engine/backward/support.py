"""Whether gradient methods can run on a model, known at load time so model metadata can say so up front."""

from __future__ import annotations

import onnx

from onnxplain.server.engine.backward.path import differentiable_path
from onnxplain.server.engine.backward.prepare import infer_shapes
from onnxplain.server.engine.backward.rules import rule_for
from onnxplain.server.engine.backward.targets import explained_tensor


def gradient_problem(model: onnx.ModelProto, input_name: str, output_name: str) -> str | None:
    """Why gradient methods cannot run on the model (ops on the input-to-logits path without a VJP rule), or None.
    Works on the graph without its weights; rules that refuse an attribute combination still say so per request."""
    target = explained_tensor(model, output_name, probability=False)  # the logits: adds no node
    try:
        _, _, dtypes = infer_shapes(model)
    except Exception:  # shape inference failing only loses the element types: unknown types count as float
        dtypes = {}
    nodes, _ = differentiable_path(model.graph, [input_name], target, dtypes)
    missing = [f"{node.op_type} (node {node.name!r})" for node in nodes if rule_for(node.op_type) is None]
    if not missing:
        return None
    return f"no gradient rule for op {', '.join(missing[:5])}" + (" and more" if len(missing) > 5 else "")
