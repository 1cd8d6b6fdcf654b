"""`onnxplain check-gradients`, run as a user runs it, on model files as exporters write them: the backward graph
agrees with finite differences (exit 0), and a model with an op that has no gradient rule is named (exit 2)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from support.models import IR_VERSION, ChannelsLast, SmallCNN, WithSoftmax, export
from support.servers import run_cli

VERDICT = re.compile(r"max relative error (\S+) \(tolerance (\S+)\): ok")
SIZE = 16


def paddle_style(model: bytes) -> bytes:
    """Every dynamic dimension written as dim_value -1, as Paddle2ONNX writes them."""
    proto = onnx.load_from_string(model)
    for value in (*proto.graph.input, *proto.graph.output):
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.Clear()
                dim.dim_value = -1
    return proto.SerializeToString()


def check(model: bytes, tmp_path: Path, *options: str):
    path = tmp_path / "model.onnx"
    path.write_bytes(model)
    return run_cli("check-gradients", str(path), *options)


@pytest.mark.parametrize(
    ("model", "options"),
    [
        pytest.param(lambda: export(SmallCNN(), (1, 3, SIZE, SIZE)), (), id="opset17"),
        pytest.param(lambda: export(SmallCNN(), (1, 3, SIZE, SIZE), opset=11), (), id="opset11"),
        pytest.param(lambda: export(ChannelsLast(SmallCNN()), (1, SIZE, SIZE, 3)), (), id="nhwc"),
        pytest.param(
            lambda: export(WithSoftmax(SmallCNN()), (1, 3, SIZE, SIZE), dynamic_batch=False),
            ("--probability",),
            id="probability-fixed-batch",
        ),
        pytest.param(
            lambda: export(SmallCNN(), (1, 3, SIZE, SIZE), dynamic_spatial=True),
            ("--size", "24", "20"),
            id="dynamic-size",
        ),
        pytest.param(
            # The opset is raised after the image size is fixed: raised first, the version converter stamped
            # zero-sized shapes and the check crashed with a ZeroDivisionError.
            lambda: paddle_style(export(SmallCNN(), (1, 3, SIZE, SIZE), opset=11, dynamic_spatial=True)),
            ("--size", "24", "20"),
            id="paddle-dynamic-size-opset11",
        ),
    ],
)
def test_backward_graph_agrees_with_finite_differences(model, options: tuple[str, ...], tmp_path: Path) -> None:
    result = check(model(), tmp_path, "--directions", "4", *options)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(re.findall(r"^direction \d/4: ", result.stdout, re.MULTILINE)) == 4, result.stdout
    verdict = VERDICT.search(result.stdout)
    assert verdict is not None, result.stdout
    assert float(verdict.group(1)) < float(verdict.group(2))
    assert "backward ops: " in result.stdout


def test_a_dynamic_image_size_needs_size(tmp_path: Path) -> None:
    result = check(export(SmallCNN(), (1, 3, SIZE, SIZE), dynamic_spatial=True), tmp_path)
    assert result.returncode == 2
    assert "--size H W" in result.stderr


def test_an_op_without_a_rule_is_named(tmp_path: Path) -> None:
    """Mod (float, fmod=1) on the path from the image to the scores: no gradient rule."""
    graph = helper.make_graph(
        [
            helper.make_node("Mod", ["input", "divisor"], ["wrapped"], name="wrap", fmod=1),
            helper.make_node("Flatten", ["wrapped"], ["scores"], axis=1),
        ],
        "mod",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 4, 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 16])],
        [numpy_helper.from_array(np.asarray(0.7, dtype=np.float32), "divisor")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    result = check(model.SerializeToString(), tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no gradient for op Mod (node 'wrap')" in result.stderr
