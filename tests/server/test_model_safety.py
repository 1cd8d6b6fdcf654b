"""Models read nothing outside their own folder and nothing beyond the size limit.

ONNX external data is a known path traversal: a weight's `location` may be '../', an absolute path, ONNX Runtime's
in-memory address tag, or a file that is a link to anywhere. A real server on a repository holding one model of each
kind must mark each unavailable with a clear reason and serve the others; a secret weight lies outside every model
folder, so a model that read it would score 7x instead of 2x its rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from support.models import IR_VERSION, identity_classifier, write_model
from support.servers import start_server

from onnxplain.client import Client, ModelStatus, OnnxplainError
from onnxplain.server.repository.safety import ORT_MEMORY_ADDRESS_TAG, external_data_problem, model_file_problem

WEIGHT = np.float32(2.0)
SECRET_WEIGHT = np.float32(7.0)
MAX_MODEL_BYTES = 4096
IMAGE = np.arange(32, dtype=np.float32).reshape(1, 4, 8)


def external_tensor(location: str, name: str = "weight") -> TensorProto:
    """A one-element float tensor whose 4 bytes are read from the start of the external file `location`."""
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[1], data_location=TensorProto.EXTERNAL)
    tensor.external_data.add(key="location", value=location)
    tensor.external_data.add(key="offset", value="0")
    tensor.external_data.add(key="length", value="4")
    return tensor


def weighted_rows(location: str) -> onnx.ModelProto:
    """scores[r] = mean of row r of (input * weight), the weight read from the external file `location`."""
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["input", "weight"], ["scaled"]),
            helper.make_node("ReduceMean", ["scaled"], ["rows"], axes=[3], keepdims=0),
            helper.make_node("Flatten", ["rows"], ["scores"], axis=1),
        ],
        "weighted_rows",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 4, 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 4])],
        initializer=[external_tensor(location)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=IR_VERSION)


@dataclass
class Served:
    client: Client
    statuses: dict[str, ModelStatus]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("repository")
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.bin").write_bytes(SECRET_WEIGHT.tobytes())
    (root / "secret.bin").write_bytes(SECRET_WEIGHT.tobytes())

    def add(name: str, location: str, weight: bytes | None = WEIGHT.tobytes()) -> Path:
        path = write_model(root, name, weighted_rows(location).SerializeToString())
        if weight is not None:
            (path.parent / location).parent.mkdir(parents=True, exist_ok=True)
            (path.parent / location).write_bytes(weight)
        return path

    write_model(root, "plain", identity_classifier())
    add("weights", "weights.bin")
    add("linked_inside", "weights.bin", weight=None)
    (root / "linked_inside" / "1" / "real.bin").write_bytes(WEIGHT.tobytes())
    os.symlink("real.bin", root / "linked_inside" / "1" / "weights.bin")

    add("parent_location", "../secret.bin", weight=None)
    (root / "parent_location" / "secret.bin").write_bytes(SECRET_WEIGHT.tobytes())
    add("absolute_location", str(outside / "secret.bin"), weight=None)
    add("linked_weights", "weights.bin", weight=None)
    os.symlink(outside / "secret.bin", root / "linked_weights" / "1" / "weights.bin")
    # The file exists at the tag's path, so only recognising the tag refuses it.
    add("memory_tag", ORT_MEMORY_ADDRESS_TAG)
    add("oversized", "weights.bin", weight=WEIGHT.tobytes() * (MAX_MODEL_BYTES // 4))

    outside_model = outside / "model.onnx"
    outside_model.write_bytes(weighted_rows("secret.bin").SerializeToString())
    (root / "linked_model" / "1").mkdir(parents=True)
    os.symlink(outside_model, root / "linked_model" / "1" / "model.onnx")
    (outside / "folder" / "1").mkdir(parents=True)
    (outside / "folder" / "1" / "model.onnx").write_bytes(weighted_rows("secret.bin").SerializeToString())
    (outside / "folder" / "1" / "secret.bin").write_bytes(SECRET_WEIGHT.tobytes())
    os.symlink(outside / "folder", root / "linked_folder")

    server = start_server(root, "--max-model-bytes", str(MAX_MODEL_BYTES))
    try:
        with Client(server.target, timeout=60) as client:
            yield Served(client, {status.name: status for status in client.models()})
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (
            "parent_location",
            "tensor 'weight': its external data location '../secret.bin' points outside the model folder",
        ),
        ("absolute_location", "points outside the model folder (it must be a relative path)"),
        ("linked_weights", "tensor 'weight': its external data file 'weights.bin' is a link to a file outside"),
        ("memory_tag", "ONNX Runtime's in-memory address tag"),
        ("linked_model", "model.onnx is a link to a file outside its version folder"),
        ("linked_folder", "leads outside the model repository through a link"),
        ("oversized", f"more than the model size limit of {MAX_MODEL_BYTES} bytes (--max-model-bytes)"),
    ],
)
def test_unsafe_models_are_unavailable_with_the_reason(served: Served, name: str, reason: str) -> None:
    status = served.statuses[name]
    assert status.state == "unavailable"
    assert reason in status.reason
    with pytest.raises(OnnxplainError) as refused:
        served.client.predict(name, IMAGE)
    assert refused.value.code is grpc.StatusCode.UNAVAILABLE
    assert reason in refused.value.message


@pytest.mark.parametrize(("name", "weight"), [("plain", 1.0), ("weights", WEIGHT), ("linked_inside", WEIGHT)])
def test_the_other_models_serve(served: Served, name: str, weight: float) -> None:
    assert served.statuses[name].state == "ready"
    np.testing.assert_allclose(served.client.predict(name, IMAGE).scores, weight * IMAGE[0].mean(axis=1), rtol=1e-6)


def test_load_model_takes_only_names_from_the_repository(served: Served) -> None:
    with pytest.raises(OnnxplainError) as refused:
        served.client.load("../outside")
    assert refused.value.code is grpc.StatusCode.NOT_FOUND


# ---- every place a tensor can hide -----------------------------------------------------------------------------------


def with_subgraph_tensor(location: str) -> onnx.ModelProto:
    """The external tensor sits in the then-branch of an If, two graphs below the main one."""
    branch = helper.make_graph(
        [helper.make_node("Identity", ["hidden"], ["out"])],
        "branch",
        [],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1])],
        initializer=[external_tensor(location, name="hidden")],
    )
    model = weighted_rows("weights.bin")
    model.graph.node.append(helper.make_node("If", ["condition"], ["chosen"], then_branch=branch, else_branch=branch))
    return model


def with_sparse_tensor(location: str) -> onnx.ModelProto:
    model = weighted_rows("weights.bin")
    indices = helper.make_tensor("indices", TensorProto.INT64, [1], [0])
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(external_tensor(location, "hidden"), indices, [4]))
    return model


def with_function_constant(location: str) -> onnx.ModelProto:
    model = weighted_rows("weights.bin")
    constant = helper.make_node("Constant", [], ["c"], value=external_tensor(location, "hidden"))
    model.functions.append(
        helper.make_function("local", "Hidden", [], ["c"], [constant], [helper.make_opsetid("", 13)])
    )
    return model


def with_attribute_tensors(location: str) -> onnx.ModelProto:
    model = weighted_rows("weights.bin")
    node = helper.make_node("Custom", [], ["c"], domain="local")
    node.attribute.append(helper.make_attribute("values", [external_tensor(location, "hidden")]))
    model.graph.node.append(node)
    return model


@pytest.mark.parametrize(
    "build", [with_subgraph_tensor, with_sparse_tensor, with_function_constant, with_attribute_tensors]
)
def test_tensors_outside_the_initializers_are_checked_too(build, tmp_path: Path) -> None:
    path = tmp_path / "1" / "model.onnx"
    path.parent.mkdir()
    path.write_bytes(b"")
    (path.parent / "weights.bin").write_bytes(WEIGHT.tobytes())
    (tmp_path / "secret.bin").write_bytes(SECRET_WEIGHT.tobytes())
    assert external_data_problem(build("weights.bin"), path, MAX_MODEL_BYTES) is None
    problem = external_data_problem(build("../secret.bin"), path, MAX_MODEL_BYTES)
    assert problem == "tensor 'hidden': its external data location '../secret.bin' points outside the model folder " + (
        "(it must be a relative path)"
    )


def test_the_size_limit_counts_the_model_file_and_each_external_file_once(tmp_path: Path) -> None:
    path = tmp_path / "1" / "model.onnx"
    path.parent.mkdir()
    model = weighted_rows("weights.bin")
    model.graph.initializer.append(external_tensor("weights.bin", name="again"))
    path.write_bytes(model.SerializeToString())
    (path.parent / "weights.bin").write_bytes(bytes(100))
    total = path.stat().st_size + 100
    assert model_file_problem(path, tmp_path, path.stat().st_size) is None
    assert model_file_problem(path, tmp_path, path.stat().st_size - 1) is not None
    assert external_data_problem(model, path, total) is None
    assert f"take {total} bytes" in external_data_problem(model, path, total - 1)
