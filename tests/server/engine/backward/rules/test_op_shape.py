"""The shape rules (reshapes, Transpose, Concat/Split, Slice, Pad, Gather, Expand, Tile, pass-through ops) against
torch autograd, over their attribute forms and the opsets where those forms change."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import helper
from support.vjp import check_against_torch, one_op_model, onnx_vjp, symbolic_batch

from onnxplain.server.engine.backward.builder import MissingRule

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min


def _random(*shape: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _ints(*values: int) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def _followed_by(model: onnx.ModelProto, op_type: str, inputs: list[str], **attrs) -> onnx.ModelProto:
    """The model with one more node, fed by its outputs, whose output `z` becomes the only output."""
    model.graph.node.append(helper.make_node(op_type, inputs, ["z"], **attrs))
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, None))
    return model


X = _random(2, 3, 4, 5)


@pytest.mark.parametrize(
    ("op_type", "initializers", "attrs", "opset", "shape"),
    [
        ("Flatten", {}, {"axis": 0}, 17, (1, 120)),
        ("Flatten", {}, {}, 17, (2, 60)),
        ("Flatten", {}, {"axis": 2}, 17, (6, 20)),
        ("Flatten", {}, {"axis": -1}, 17, (24, 5)),
        ("Reshape", {"shape": _ints(0, -1)}, {}, 17, (2, 60)),
        ("Reshape", {"shape": _ints(4, 3, 10)}, {}, 13, (4, 3, 10)),
        ("Squeeze", {}, {}, 11, (2, 3)),
        ("Squeeze", {}, {"axes": [1]}, 11, (2, 3, 1)),
        ("Squeeze", {"axes": _ints(1, -1)}, {}, 13, (2, 3)),
        ("Unsqueeze", {}, {"axes": [0, 3]}, 11, (1, 2, 3, 1, 4, 5)),
        ("Unsqueeze", {"axes": _ints(-1, 1)}, {}, 13, (2, 1, 3, 4, 5, 1)),
    ],
)
def test_reshapes(op_type, initializers, attrs, opset, shape):
    x = _random(2, 1, 3, 1) if op_type == "Squeeze" else X
    model = one_op_model(op_type, {"x": x}, initializers, opset=opset, **attrs)
    check_against_torch(model, {"x": x}, lambda t: t.reshape(shape))


@pytest.mark.parametrize("perm", [None, [0, 2, 3, 1], [3, 1, 0, 2]])
def test_transpose(perm):
    attrs = {} if perm is None else {"perm": perm}
    model = one_op_model("Transpose", {"x": X}, **attrs)
    check_against_torch(model, {"x": X}, lambda t: t.permute(*(perm or [3, 2, 1, 0])))


@pytest.mark.parametrize("axis", [1, -1])
def test_concat_of_inputs_and_an_initializer(axis):
    a, b, c = _random(2, 3, 4, seed=1), _random(2, 3, 4, seed=2), _random(2, 3, 4, seed=3)
    b = b[:, :2] if axis == 1 else b[..., :1]
    c = c[:, :1] if axis == 1 else c
    model = one_op_model("Concat", {"a": a, "c": c}, {"b": b}, input_order=["a", "b", "c"], axis=axis)
    check_against_torch(
        model, {"a": a, "c": c}, lambda ta, tc: torch.cat([ta, torch.tensor(b, dtype=ta.dtype), tc], axis)
    )


def test_concat_of_one_input_twice():
    model = one_op_model("Concat", {"a": X}, input_order=["a", "a"], axis=0)
    check_against_torch(model, {"a": X}, lambda t: torch.cat([t, t], 0))


@pytest.mark.parametrize(
    ("opset", "initializers", "attrs", "sizes"),
    [
        (11, {}, {"axis": 3, "split": [1, 3, 1]}, [1, 3, 1]),
        (13, {"split": _ints(2, 1, 1)}, {"axis": 2}, [2, 1, 1]),
        (13, {}, {"axis": 1}, [1, 1, 1]),
        (18, {}, {"axis": -1, "num_outputs": 3}, [2, 2, 1]),
        (18, {"split": _ints(1, 2, 2)}, {"axis": -1}, [1, 2, 2]),
    ],
)
@pytest.mark.parametrize("used", [[0], [2, 0]])
def test_split(opset, initializers, attrs, sizes, used):
    """Only output 0 reaches the target (zeros for the others), or outputs 2 and 0 through a Concat."""
    axis = attrs["axis"]
    model = one_op_model("Split", {"x": X}, initializers, outputs=3, opset=opset, **attrs)
    if used != [0]:
        model = _followed_by(model, "Concat", [f"y{i}" for i in used], axis=axis)

    def reference(t):
        parts = torch.split(t, sizes, axis)
        return torch.cat([parts[i] for i in used], axis)

    check_against_torch(model, {"x": X}, reference)


@pytest.mark.parametrize(
    ("starts", "ends", "axes", "steps", "reference"),
    [
        ((1,), (-1,), (2,), None, lambda t: t[:, :, 1:-1]),
        ((0, 1), (1, 3), None, None, lambda t: t[0:1, 1:3]),
        ((-3, -4), (INT64_MAX, -1), (-1, 1), None, lambda t: t[:, -4:-1, :, -3:]),
        ((-1000,), (1000,), (0,), None, lambda t: t),
        ((0, 1), (5, 100), (2, 3), (2, 3), lambda t: t[:, :, 0:5:2, 1::3]),
        ((-1,), (INT64_MIN,), (3,), (-1,), lambda t: t.flip(3)),
        ((3,), (0,), (2,), (-2,), lambda t: t[:, :, [3, 1]]),
        ((1, 4), (2, 0), (0, 3), (1, -3), lambda t: t[1:2, :, :, [4, 1]]),
    ],
)
def test_slice(starts, ends, axes, steps, reference):
    initializers = {"starts": _ints(*starts), "ends": _ints(*ends)}
    order = ["x", "starts", "ends"]
    if axes is not None or steps is not None:
        initializers["axes"] = _ints(*(axes or range(len(starts))))
        order.append("axes")
    if steps is not None:
        initializers["steps"] = _ints(*steps)
        order.append("steps")
    model = one_op_model("Slice", {"x": X}, initializers, input_order=order)
    check_against_torch(model, {"x": X}, reference)


@pytest.mark.parametrize(
    ("pads", "mode", "value", "opset", "torch_pads"),
    [
        ((0, 0, 1, 2, 0, 0, 3, 0), "constant", 0.0, 17, (2, 0, 1, 3)),
        ((0, 0, 1, 2, 0, 0, 3, 0), "constant", 1.5, 17, (2, 0, 1, 3)),
        ((0, 0, -1, 2, 0, 0, 1, -2), "constant", 0.0, 17, (2, -2, -1, 1)),
        ((1, 0, 0, 0, 0, 1, 0, 0), "constant", 0.0, 17, (0, 0, 0, 0, 0, 1, 1, 0)),
        ((0, 0, 2, 1, 0, 0, 1, 3), "reflect", 0.0, 17, (1, 3, 2, 1)),
        ((0, 0, 2, 1, 0, 0, 1, 3), "edge", 0.0, 17, (1, 3, 2, 1)),
        ((0, 0, 2, 1, 0, 0, 1, 3), "wrap", 0.0, 19, (1, 3, 2, 1)),
    ],
)
def test_pad(pads, mode, value, opset, torch_pads):
    initializers = {"pads": _ints(*pads), "value": np.float32(value)}
    model = one_op_model("Pad", {"x": X}, initializers, mode=mode, opset=opset)
    torch_mode = {"edge": "replicate", "wrap": "circular"}.get(mode, mode)
    kwargs = {"value": value} if mode == "constant" else {}
    check_against_torch(model, {"x": X}, lambda t: F.pad(t, torch_pads, mode=torch_mode, **kwargs))


@pytest.mark.parametrize(
    ("axes", "pads", "torch_pads"),
    [((2, 3), (1, -1, 2, 3), (-1, 3, 1, 2)), ((-1,), (2, 1), (2, 1))],
)
def test_pad_with_axes_input(axes, pads, torch_pads):
    initializers = {"pads": _ints(*pads), "value": np.float32(0.0), "axes": _ints(*axes)}
    model = one_op_model("Pad", {"x": X}, initializers, opset=18)
    check_against_torch(model, {"x": X}, lambda t: F.pad(t, torch_pads))


@pytest.mark.parametrize(
    ("indices", "axis", "reference"),
    [
        (np.int64(0), 1, lambda t, i: t[:, 0]),
        (np.int64(-1), -1, lambda t, i: t[..., -1]),
        (_ints(3, -1, 3), 2, lambda t, i: t[:, :, [3, 3, 3]]),
        (_ints(0, 2, 2, 1), 0, lambda t, i: t[[0, 2, 2, 1]]),
        (np.asarray([[0, 2], [1, 1]], dtype=np.int64), 1, lambda t, i: t[:, i]),
    ],
)
def test_gather_at_constant_indices(indices, axis, reference):
    x = _random(3, 3, 4, 5)
    model = one_op_model("Gather", {"x": x}, {"indices": indices}, axis=axis)
    check_against_torch(model, {"x": x}, lambda t: reference(t, torch.as_tensor(indices)))


@pytest.mark.parametrize(
    ("shape", "indices", "axis", "batch"),
    [
        # The dynamo exporter's as_strided: a flattened activation read at indices computed from the batch size.
        ((24,), np.arange(24).reshape(2, 12, 1, 1), 0, True),
        ((3, 4, 5), np.asarray([[3, -1], [0, 3], [1, 1]]), 1, False),
        ((3, 4, 5), np.asarray([4, 0, -5, 2]), 2, True),
        ((3, 4, 5), np.asarray([2, 0, 2]), 0, True),  # constant-like indices on the batch axis, whose size is unknown
    ],
)
def test_gather_at_indices_computed_at_run_time(shape, indices, axis, batch):
    x = _random(*shape)
    indices = indices.astype(np.int64)
    model = one_op_model("Gather", {"x": x, "indices": indices}, axis=axis)
    if batch:
        model = symbolic_batch(model)
    seed = np.random.default_rng(2).standard_normal(np.take(x, indices, axis=axis).shape).astype(np.float32)
    (ours,) = onnx_vjp(model, {"x": x, "indices": indices}, seed, ["x"])
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    picked = torch.index_select(t, axis, torch.as_tensor(indices.reshape(-1) % shape[axis]))
    picked = picked.reshape(np.take(x, indices, axis=axis).shape)
    (expected,) = torch.autograd.grad(picked, t, torch.tensor(seed, dtype=torch.float64))
    np.testing.assert_allclose(ours, expected.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("shape", "out"), [((3, 1, 5), (2, 3, 4, 5)), ((4, 1), (3, 1, 1)), ((2, 3), (2, 3))])
def test_expand(shape, out):
    x = _random(*shape)
    model = one_op_model("Expand", {"x": x}, {"shape": _ints(*out)})
    check_against_torch(model, {"x": x}, lambda t: torch.broadcast_to(t, np.broadcast_shapes(shape, out)))


@pytest.mark.parametrize("repeats", [(1, 2, 3), (2, 1, 1), (1, 1, 1)])
def test_tile(repeats):
    x = _random(2, 3, 4)
    model = one_op_model("Tile", {"x": x}, {"repeats": _ints(*repeats)})
    check_against_torch(model, {"x": x}, lambda t: t.repeat(*repeats))


@pytest.mark.parametrize(
    ("op_type", "initializers", "outputs", "attrs"),
    [
        ("Identity", {}, 1, {}),
        ("Dropout", {}, 1, {}),
        ("Dropout", {"ratio": np.float32(0.3)}, 2, {}),
        ("Dropout", {"ratio": np.float32(0.3), "training_mode": np.bool_(False)}, 1, {}),
        ("Cast", {}, 1, {"to": onnx.TensorProto.FLOAT}),
    ],
)
def test_pass_through(op_type, initializers, outputs, attrs):
    model = one_op_model(op_type, {"x": X}, initializers, outputs=outputs, **attrs)
    if outputs == 2:  # Dropout's mask
        model.graph.output[1].type.tensor_type.elem_type = onnx.TensorProto.BOOL
    check_against_torch(model, {"x": X}, lambda t: t)


def test_cast_to_double_and_back():
    model = one_op_model("Cast", {"x": X}, to=onnx.TensorProto.DOUBLE)
    model = _followed_by(model, "Cast", ["y0"], to=onnx.TensorProto.FLOAT)
    check_against_torch(model, {"x": X}, lambda t: t)


@pytest.mark.parametrize(
    ("op_type", "initializers", "attrs"),
    [
        ("Dropout", {"ratio": np.float32(0.3), "training_mode": np.bool_(True)}, {}),
        ("Pad", {"pads": _ints(0, 0, -1, 0, 0, 0, 0, 1)}, {"mode": "reflect"}),
    ],
)
def test_unsupported_forms_are_reported(op_type, initializers, attrs):
    model = one_op_model(op_type, {"x": X}, initializers, **attrs)
    with pytest.raises(MissingRule):
        onnx_vjp(model, {"x": X}, np.ones((2, 3, 4, 5), np.float32), ["x"])


@pytest.mark.parametrize(
    ("op_type", "initializers", "attrs", "reference"),
    [
        ("Flatten", {}, {}, lambda t: t.flatten(1)),
        ("Slice", {"starts": _ints(1), "ends": _ints(3), "axes": _ints(2)}, {}, lambda t: t[:, :, 1:3]),
        ("Pad", {"pads": _ints(0, 0, 1, -1, 0, 0, 2, 1)}, {}, lambda t: F.pad(t, (-1, 1, 1, 2))),
        ("Gather", {"indices": np.int64(0)}, {"axis": 1}, lambda t: t[:, 0]),
        ("Gather", {"indices": _ints(1, 1, 0, 2).reshape(2, 2)}, {"axis": 1}, lambda t: t[:, [[1, 1], [0, 2]]]),
        ("Tile", {"repeats": _ints(1, 2, 1, 3)}, {}, lambda t: t.repeat(1, 2, 1, 3)),
        ("Expand", {"shape": _ints(2, 1, 3, 1, 1)}, {}, lambda t: t.expand(2, 2, 3, 4, 5)),
        ("Transpose", {}, {"perm": [1, 0, 3, 2]}, lambda t: t.permute(1, 0, 3, 2)),
    ],
)
def testsymbolic_batch(op_type, initializers, attrs, reference):
    """The builder fixes every dimension but the batch: the rules must not need it."""
    model = symbolic_batch(one_op_model(op_type, {"x": X}, initializers, **attrs))
    check_against_torch(model, {"x": X}, reference)


@pytest.mark.parametrize("used", [[0], [2, 0]])
def test_split_and_concat_with_asymbolic_batch(used):
    model = one_op_model("Split", {"x": X}, {"split": _ints(1, 3, 1)}, outputs=3, axis=3)
    if used != [0]:
        model = _followed_by(model, "Concat", [f"y{i}" for i in used], axis=3)

    def reference(t):
        parts = torch.split(t, [1, 3, 1], 3)
        return torch.cat([parts[i] for i in used], 3)

    check_against_torch(symbolic_batch(model), {"x": X}, reference)
