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
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([classes], dtype=np.int64), _PREFIX + "k"),
            numpy_helper.from_array(np.array(0, dtype=np.int64), _PREFIX + "zero"),
            numpy_helper.from_array(np.arange(classes, dtype=np.int64)[None], _PREFIX + "classes"),
        ]
    )
    nodes = _ranked_seed_nodes(built.target_output, seed.type.tensor_type.elem_type, len(built.seed_shape))
    existing = list(graph.node)
    first_use = next((i for i, node in enumerate(existing) if SEED_INPUT in node.input), len(existing))
    del graph.node[:]
    graph.node.extend([*existing[:first_use], *nodes, *existing[first_use:]])
    return True


def _ranked_seed_nodes(target: str, seed_type: int, target_rank: int) -> list[onnx.NodeProto]:
    def name(short: str) -> str:
        return _PREFIX + short

    def node(op: str, inputs: list[str], output: str, **attributes) -> onnx.NodeProto:
        return helper.make_node(op, inputs, [name(output)], name=name(output), **attributes)

    nodes = [
        node("Flatten", [target], "scores", axis=1),
        helper.make_node(
            "TopK",
            [name("scores"), name("k")],
            [name("sorted"), name("order")],
            name=name("topk"),
            axis=1,
            largest=1,
            sorted=1,
        ),
        node("Max", [RANK_INPUT, name("zero")], "rank"),
        node("GatherElements", [name("order"), name("rank")], "class", axis=1),
        node("Equal", [name("classes"), name("class")], "is_class"),
        node("Less", [RANK_INPUT, name("zero")], "unranked"),
        node("Not", [name("unranked")], "ranked"),
        node("And", [name("is_class"), name("ranked")], "picked"),
        node("Cast", [name("picked")], "one_hot", to=seed_type),
    ]
    one_hot = name("one_hot")
    if target_rank != 2:
        nodes += [node("Shape", [target], "shape"), node("Reshape", [one_hot, name("shape")], "shaped")]
        one_hot = name("shaped")
    nodes.append(helper.make_node("Add", [_GIVEN_SEED, one_hot], [SEED_INPUT], name=name("seed")))
    return nodes
