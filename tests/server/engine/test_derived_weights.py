"""Derived sessions use the model's weights as read at load, in place: the same outputs as a session holding its own
copy of every weight, a graph handed to ONNX Runtime without the shared weights' data, a builder's changed weights
kept as the builder left them, and nothing read from disk after load (weights files rewritten or removed later
change nothing)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from onnx.external_data_helper import uses_external_data
from support.models import SmallCNN, export

from onnxplain.server.engine.derived import DerivedGraphs, DerivedMemory, derived_session_options
from onnxplain.server.engine.gradients import BackwardSpec, backward_graph
from onnxplain.server.engine.providers import CPU
from onnxplain.server.engine.session import MIN_SHARED_BYTES, SharedWeights
from onnxplain.server.repository.signature import read_signature

SHAPE = (3, 16, 16)
CLASSES = 64  # a head of 16 x 64 floats: big enough to be shared, like the second convolution


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return onnx.load_from_string(export(SmallCNN(classes=CLASSES, seed=3), (1, *SHAPE), keep_batch_norm=False))


def gradient_builder(model: onnx.ModelProto):
    signature = read_signature(model)

    def build(full: onnx.ModelProto) -> onnx.ModelProto:
        built, _ = backward_graph(full, signature, SHAPE, BackwardSpec())
        return built.model

    return build


def feed_for(input_shapes: dict[str, tuple], rows: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        name: rng.standard_normal([rows if d is None else d for d in shape]).astype(np.float32)
        for name, shape in input_shapes.items()
    }


def graphs_of(model: onnx.ModelProto, **kwargs) -> DerivedGraphs:
    return DerivedGraphs(model, providers=[CPU], threads=1, memory=DerivedMemory(1 << 40), **kwargs)


def big_initializers(model: onnx.ModelProto) -> set[str]:
    return {
        tensor.name for tensor in model.graph.initializer if numpy_helper.to_array(tensor).nbytes >= MIN_SHARED_BYTES
    }


def test_a_shared_weights_session_gives_the_outputs_of_one_holding_its_own_weights(model) -> None:
    build = gradient_builder(model)
    graphs = graphs_of(model)
    session = graphs.session("gradient", build)
    full = build(graphs.weights.model())
    # The same options but every weight in the graph itself: what each derived session held before.
    options = derived_session_options(1)
    options.add_session_config_entry("session.disable_prepacking", "1")
    alone = ort.InferenceSession(full.SerializeToString(), options, providers=[CPU])
    for seed in range(3):
        feed = feed_for(session.input_shapes, seed=seed)
        shared_outputs = session.run(feed)
        own_outputs = alone.run(list(session.output_names), feed)
        for shared_output, own_output in zip(shared_outputs, own_outputs, strict=True):
            np.testing.assert_array_equal(shared_output, own_output)


def test_the_graph_given_to_onnx_runtime_leaves_the_shared_weights_out(model) -> None:
    build = gradient_builder(model)
    weights = SharedWeights(model)
    derived = build(weights.model())
    full_size = derived.ByteSize()
    shared = weights.detach(derived)
    assert set(shared) == big_initializers(model) and len(shared) >= 2
    assert weights.nbytes == weights.bytes_of(shared)
    # Each shared tensor is left as a reference of a few bytes (an in-memory file's name, offset and length).
    assert derived.ByteSize() <= full_size - weights.nbytes + 100 * len(shared)
    assert all(uses_external_data(t) and not t.raw_data for t in derived.graph.initializer if t.name in shared)


def test_a_weight_the_builder_changed_stays_in_the_graph_with_its_new_value(model) -> None:
    changed = next(iter(big_initializers(model)))

    def scaled(full: onnx.ModelProto) -> onnx.ModelProto:
        tensor = next(t for t in full.graph.initializer if t.name == changed)
        tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * 2, changed))
        return full

    weights = SharedWeights(model)
    derived = scaled(weights.model())
    shared = weights.detach(derived)
    assert changed not in shared and shared
    kept = next(t for t in derived.graph.initializer if t.name == changed)
    original = next(t for t in model.graph.initializer if t.name == changed)
    np.testing.assert_array_equal(numpy_helper.to_array(kept), numpy_helper.to_array(original) * 2)
    # And the session computes with the builder's value, not the shared one.
    graphs = graphs_of(model)
    session = graphs.session("scaled", scaled)
    feed = {"input": feed_for({"input": (None, *SHAPE)})["input"]}
    expected = ort.InferenceSession(scaled(weights.model()).SerializeToString(), providers=[CPU]).run(None, feed)
    np.testing.assert_allclose(session.run(feed)[0], expected[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("given", ["graph", "file"])
def test_weights_files_rewritten_or_removed_after_load_change_no_derived_graph(model, tmp_path, given) -> None:
    path = tmp_path / "model.onnx"
    saved = onnx.ModelProto()
    saved.CopyFrom(model)  # saving with external data rewrites the proto
    onnx.save(saved, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    weights_file = tmp_path / "weights.bin"
    loaded = onnx.load(str(path), load_external_data=False)  # as the loader reads it
    graphs = graphs_of(path) if given == "file" else graphs_of(loaded, weights_dir=tmp_path)
    build = gradient_builder(loaded)
    feed = feed_for(graphs.session("first", build).input_shapes)
    expected = ort.InferenceSession(build(onnx.load(str(path))).SerializeToString(), providers=[CPU]).run(None, feed)

    weights_file.write_bytes(np.random.default_rng(1).bytes(weights_file.stat().st_size))
    rewritten = graphs.session("after rewrite", build)
    weights_file.unlink()
    path.unlink()
    removed = graphs.session("after removal", build)
    for session in (rewritten, removed):
        for output, reference in zip(session.run(feed), expected, strict=True):
            np.testing.assert_allclose(output, reference, rtol=1e-5, atol=1e-6)


def test_a_constant_an_optimiser_rewrites_in_place_is_not_shared() -> None:
    """ONNX Runtime's transpose optimiser pushes the Transpose past the Add and transposes the Add's constant in
    place, under its own name: a shared value would come back untransposed. Only the MatMul's weight is shared."""
    rng = np.random.default_rng(4)
    positions = rng.standard_normal((1, 17, 32)).astype(np.float32)
    weight = rng.standard_normal((32, 32)).astype(np.float32)
    graph = onnx.helper.make_graph(
        [
            onnx.helper.make_node("Transpose", ["input"], ["tokens"], perm=[0, 2, 1]),
            onnx.helper.make_node("Add", ["tokens", "positions"], ["placed"]),
            onnx.helper.make_node("MatMul", ["placed", "weight"], ["scores"]),
        ],
        "tokens",
        [onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 32, 17])],
        [onnx.helper.make_tensor_value_info("scores", onnx.TensorProto.FLOAT, [1, 17, 32])],
        [numpy_helper.from_array(positions, "positions"), numpy_helper.from_array(weight, "weight")],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8)
    weights = SharedWeights(model)
    assert weights.detach(weights.model()) == ["weight"]
    session = graphs_of(model).session("as is", lambda full: full)
    tokens = rng.standard_normal((1, 32, 17)).astype(np.float32)
    expected = (tokens.transpose(0, 2, 1) + positions) @ weight
    np.testing.assert_allclose(session.run({"input": tokens})[0], expected, rtol=1e-5, atol=1e-5)
