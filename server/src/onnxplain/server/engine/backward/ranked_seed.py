"""Seeds by rank: a backward graph that picks its target classes from the scores it computes itself, so a request
for the top class (or the top k) needs no scoring forward before its backward run.

The seed input gets a sibling, RANK_INPUT, one int64 per row: a row of rank r >= 0 adds to its seed a one-hot of
its r-th highest scoring class (ties: the lower index first, as ONNX TopK and a stable sort order them); a row of
rank -1 adds nothing, so rows seeded by class keep their seeds as they are.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxplain.server.engine.backward.builder import SEED_INPUT, BackwardGraph

RANK_INPUT = "onnxplain_seed_rank"
_GIVEN_SEED = "onnxplain_seed_given"
_PREFIX = "onnxplain_rank/"


def add_ranked_seed(built: BackwardGraph, classes: int) -> bool:
    """Add RANK_INPUT to a built backward graph whose target holds `classes` scores per row; False (graph unchanged)
    when the target's shape is not known to hold exactly that many."""
    per_row = built.seed_shape[1:]
    if any(not isinstance(d, int) for d in per_row) or int(np.prod(per_row, dtype=np.int64)) != classes:
        return False
    graph = built.model.graph
    seed = next(value for value in graph.input if value.name == SEED_INPUT)
    seed.name = _GIVEN_SEED
    graph.input.append(helper.make_tensor_value_info(RANK_INPUT, onnx.TensorProto.INT64, ["rows", 1]))
    seed_dtype = helper.tensor_dtype_to_np_dtype(seed.type.tensor_type.elem_type)
    constants = {
        "k": np.array([classes], dtype=np.int64),
        "none": np.array(-1, dtype=np.int64),
        "step": np.array(1, dtype=np.int64),
        "classes": np.arange(classes, dtype=np.int64)[None],
        "one": np.array(1.0, dtype=seed_dtype),
        "zero": np.array(0.0, dtype=seed_dtype),
    }
    flat = len(per_row) == 1
    if not flat:  # (rows, K, 1, 1) scores: reshaped to (rows, K) and the one-hot back
        constants |= {"flat_shape": np.array([-1, classes], np.int64), "seed_shape": np.array([-1, *per_row], np.int64)}
    graph.initializer.extend(numpy_helper.from_array(value, _PREFIX + name) for name, value in constants.items())
    nodes = _ranked_seed_nodes(built.target_output, flat)
    existing = list(graph.node)
    first_use = next((i for i, node in enumerate(existing) if SEED_INPUT in node.input), len(existing))
    del graph.node[:]
    graph.node.extend([*existing[:first_use], *nodes, *existing[first_use:]])
    return True


def _ranked_seed_nodes(target: str, flat: bool) -> list[onnx.NodeProto]:
    """TopK of the (rows, classes) scores, the class at each row's rank, its one-hot, shaped like the target and
    added to the given seed. No Equal, Cast, Flatten or Not, which the CUDA provider lacks at some opsets
    (onnx-backward.md §6); a rank of -1 gathers the last class (negative indices count from the end) and is masked
    out."""

    def name(short: str) -> str:
        return _PREFIX + short

    def node(op: str, inputs: list[str], output: str, **attributes) -> onnx.NodeProto:
        return helper.make_node(op, [name(i) if i != RANK_INPUT else i for i in inputs], [name(output)], **attributes)

    scores = target if flat else name("scores")
    nodes = [] if flat else [helper.make_node("Reshape", [target, name("flat_shape")], [scores])]
    nodes += [
        helper.make_node("TopK", [scores, name("k")], [name("sorted"), name("order")], axis=1, largest=1, sorted=1),
        node("GatherElements", ["order", RANK_INPUT], "class", axis=1),
        node("Sub", ["class", "step"], "class_minus_one"),
        node("Add", ["class", "step"], "class_plus_one"),
        node("Greater", ["classes", "class_minus_one"], "from_class"),
        node("Less", ["classes", "class_plus_one"], "to_class"),
        node("And", ["from_class", "to_class"], "is_class"),
        node("Greater", [RANK_INPUT, "none"], "ranked"),
        node("And", ["is_class", "ranked"], "picked"),
        node("Where", ["picked", "one", "zero"], "one_hot"),
    ]
    one_hot = name("one_hot")
    if not flat:
        nodes.append(node("Reshape", ["one_hot", "seed_shape"], "shaped"))
        one_hot = name("shaped")
    nodes.append(helper.make_node("Add", [_GIVEN_SEED, one_hot], [SEED_INPUT]))
    return nodes
