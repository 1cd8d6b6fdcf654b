"""The static sign analysis LRP relies on to skip the x⁻ half of its rules: it must say "never negative" only where
the ops guarantee it, checked here on small graphs and against the values ONNX Runtime computes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from support.vjp import IR_VERSION

from onnxplain.server.engine.backward.context import BackwardContext

SHAPE = [2, 3, 4, 4]


def _context(nodes: list[onnx.NodeProto], constants: dict[str, np.ndarray] | None = None) -> BackwardContext:
    graph = _graph(nodes, constants)
    return BackwardContext(graph, 17, {}, {}, set())


def _graph(nodes: list[onnx.NodeProto], constants: dict[str, np.ndarray] | None = None) -> onnx.GraphProto:
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, SHAPE) for name in ("x", "w")]
    outputs = [helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None) for node in nodes]
    initializers = [numpy_helper.from_array(value, name) for name, value in (constants or {}).items()]
    return helper.make_graph(nodes, "signs", inputs, outputs, initializers)


NODE = helper.make_node
# (nodes, constants, the tensor asked about, whether it is never negative)
CASES: dict[str, tuple[list[onnx.NodeProto], dict[str, np.ndarray], str, bool]] = {
    "graph input": ([NODE("Identity", ["x"], ["y"])], {}, "x", False),
    "relu": ([NODE("Relu", ["x"], ["y"])], {}, "y", True),
    "max pool of a relu": (
        [NODE("Relu", ["x"], ["r"]), NODE("MaxPool", ["r"], ["y"], kernel_shape=[2, 2])],
        {},
        "y",
        True,
    ),
    "flattened average of a sigmoid": (
        [NODE("Sigmoid", ["x"], ["s"]), NODE("GlobalAveragePool", ["s"], ["p"]), NODE("Flatten", ["p"], ["y"])],
        {},
        "y",
        True,
    ),
    "max pool of an input": ([NODE("MaxPool", ["x"], ["y"], kernel_shape=[2, 2])], {}, "y", False),
    "sum of two relus": (
        [NODE("Relu", ["x"], ["a"]), NODE("Relu", ["w"], ["b"]), NODE("Add", ["a", "b"], ["y"])],
        {},
        "y",
        True,
    ),
    "relu plus an input": ([NODE("Relu", ["x"], ["a"]), NODE("Add", ["a", "w"], ["y"])], {}, "y", False),
    "relu minus a relu": ([NODE("Relu", ["x"], ["a"]), NODE("Sub", ["a", "a"], ["y"])], {}, "y", False),
    "max of an input and a relu": ([NODE("Relu", ["x"], ["a"]), NODE("Max", ["w", "a"], ["y"])], {}, "y", True),
    "relu times a positive constant": (
        [NODE("Relu", ["x"], ["a"]), NODE("Mul", ["a", "c"], ["y"])],
        {"c": np.array(2.0, np.float32)},
        "y",
        True,
    ),
    "relu times a negative constant": (
        [NODE("Relu", ["x"], ["a"]), NODE("Mul", ["a", "c"], ["y"])],
        {"c": np.array([1.0, -1.0, 1.0, 1.0], np.float32)},
        "y",
        False,
    ),
    "clip at zero (relu6)": (
        [NODE("Clip", ["x", "low", "high"], ["y"])],
        {"low": np.array(0.0, np.float32), "high": np.array(6.0, np.float32)},
        "y",
        True,
    ),
    "clip below zero": (
        [NODE("Clip", ["x", "low", "high"], ["y"])],
        {"low": np.array(-1.0, np.float32), "high": np.array(1.0, np.float32)},
        "y",
        False,
    ),
    "clip of a relu below zero": (
        [NODE("Relu", ["x"], ["a"]), NODE("Clip", ["a", "low", "high"], ["y"])],
        {"low": np.array(-1.0, np.float32), "high": np.array(1.0, np.float32)},
        "y",
        True,
    ),
    "clip of a relu to a negative maximum": (
        [NODE("Relu", ["x"], ["a"]), NODE("Clip", ["a", "low", "high"], ["y"])],
        {"low": np.array(0.0, np.float32), "high": np.array(-1.0, np.float32)},
        "y",
        False,
    ),
    "clip without a minimum": (
        [NODE("Clip", ["x", "", "high"], ["y"])],
        {"high": np.array(1.0, np.float32)},
        "y",
        False,
    ),
    "zero padding of a relu": (
        [NODE("Relu", ["x"], ["a"]), NODE("Pad", ["a", "pads"], ["y"])],
        {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)},
        "y",
        True,
    ),
    "padding a relu with a negative value": (
        [NODE("Relu", ["x"], ["a"]), NODE("Pad", ["a", "pads", "fill"], ["y"])],
        {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "fill": np.array(-1.0, np.float32)},
        "y",
        False,
    ),
    "reflect padding of a relu": (
        [NODE("Relu", ["x"], ["a"]), NODE("Pad", ["a", "pads"], ["y"], mode="reflect")],
        {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)},
        "y",
        True,
    ),
    "linear resize of a relu": (
        [NODE("Relu", ["x"], ["a"]), NODE("Resize", ["a", "", "scales"], ["y"], mode="linear")],
        {"scales": np.array([1, 1, 2, 2], np.float32)},
        "y",
        True,
    ),
    "cubic resize of a relu": (
        [NODE("Relu", ["x"], ["a"]), NODE("Resize", ["a", "", "scales"], ["y"], mode="cubic")],
        {"scales": np.array([1, 1, 2, 2], np.float32)},
        "y",
        False,
    ),
    "mean of a relu": ([NODE("Relu", ["x"], ["a"]), NODE("ReduceMean", ["a"], ["y"], axes=[1])], {}, "y", True),
    "hard swish": ([NODE("HardSwish", ["x"], ["y"])], {}, "y", False),
    "log softmax": ([NODE("LogSoftmax", ["x"], ["y"])], {}, "y", False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_never_negative(case: str) -> None:
    nodes, constants, name, expected = CASES[case]
    assert _context(nodes, constants).never_negative(name) is expected


@pytest.mark.parametrize("case", [case for case, (*_, expected) in CASES.items() if expected])
def test_what_it_calls_never_negative_is_never_negative_in_onnx_runtime(case: str) -> None:
    """The independent check: ONNX Runtime's values of every tensor said never negative, on inputs of both signs."""
    nodes, constants, name, _ = CASES[case]
    graph = _graph(nodes, constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {value.name: rng.normal(size=SHAPE).astype(np.float32) for value in session.get_inputs()}
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))
    assert np.all(outputs[name] >= 0)
    assert np.any(feeds["x"] < 0)


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        (NODE("Clip", ["r"], ["y"], min=0.0, max=6.0), True),
        (NODE("Clip", ["x"], ["y"], min=-1.0, max=6.0), False),
        (NODE("Clip", ["r"], ["y"], min=-1.0, max=6.0), True),
        (NODE("Clip", ["r"], ["y"], min=0.0, max=-1.0), False),
        (NODE("Clip", ["r"], ["y"], max=6.0), True),
        (NODE("Clip", ["x"], ["y"], max=6.0), False),
        (NODE("Pad", ["r"], ["y"], pads=[0, 0, 1, 1, 0, 0, 1, 1]), True),
        (NODE("Pad", ["r"], ["y"], pads=[0, 0, 1, 1, 0, 0, 1, 1], value=-1.0), False),
    ],
)
def test_attribute_forms_of_older_opsets(node: onnx.NodeProto, expected: bool) -> None:
    """Clip before opset 11 (min and max attributes: non-negative when max, if given, is, and min or the input is) and
    Pad before opset 11 (a value attribute)."""
    assert _context([NODE("Relu", ["x"], ["r"]), node]).never_negative("y") is expected
