"""Sessions pinned to their input shapes (the CUDA path, engine/pinned.py), run here on the CPU provider: the same
outputs as one session, rows-aligned runs padded to power-of-two buckets, other runs at their exact shapes, a bounded
number of sessions; and explanations through pinned sessions give the maps and pass counts of a single session."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from support.models import SmallCNN, export, write_model

import onnxplain.server.engine.session as session_module
from onnxplain.server.engine.cancel import CancelToken
from onnxplain.server.engine.pinned import ShapePinnedSession, bucket_rows, padded_rows
from onnxplain.server.engine.providers import CPU, CUDA
from onnxplain.server.engine.session import pins_shapes
from onnxplain.server.handlers.explain import explain
from onnxplain.server.handlers.schema import ExplainQuery, ImageInput, TargetQuery
from onnxplain.server.methods.registry import METHODS
from onnxplain.server.repository.loader import load_model
from onnxplain.server.repository.registry import ModelRegistry
from onnxplain.server.settings import ServerSettings

SHAPE = (3, 12, 10)


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    return export(SmallCNN(seed=11), (1, *SHAPE))


class Counting:
    """Creates CPU sessions of the model and counts them."""

    def __init__(self, model: bytes) -> None:
        self.model, self.created = model, 0

    def __call__(self) -> ort.InferenceSession:
        self.created += 1
        return ort.InferenceSession(self.model, providers=[CPU])


def batch(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, *SHAPE)).astype(np.float32)


def test_rows_aligned_runs_are_padded_to_power_of_two_buckets(model_bytes) -> None:
    create = Counting(model_bytes)
    pinned, plain = ShapePinnedSession(create), ort.InferenceSession(model_bytes, providers=[CPU])
    name = plain.get_inputs()[0].name
    for rows in (3, 1, 5, 4, 2, 8, 7, 3):
        images = batch(rows, seed=rows)
        (expected,) = plain.run(None, {name: images})
        (scores,) = pinned.run(None, {name: images}, rows_aligned=True)
        assert scores.shape == expected.shape
        np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    assert sorted(shape[0][1][0] for shape in pinned.shapes) == [1, 2, 4, 8]
    assert create.created == 4  # one session per bucket, the first one reused for the first shape


def test_feeds_common_to_all_rows_are_not_padded() -> None:
    """A rule's parameters (LRP) are fed once per run beside the rows: only the rows are padded to the bucket."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["rows", "scale"], ["scaled"])],
        "scaled_rows",
        [
            helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("scale", TensorProto.FLOAT, [3]),
        ],
        [helper.make_tensor_value_info("scaled", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    pinned = ShapePinnedSession(Counting(model.SerializeToString()))
    rows, scale = np.arange(9, dtype=np.float32).reshape(3, 3), np.array([1.0, -2.0, 0.5], np.float32)
    (scaled,) = pinned.run(None, {"rows": rows, "scale": scale}, rows_aligned=True, shared={"scale"})
    np.testing.assert_array_equal(scaled, rows * scale)
    assert pinned.shapes == [(("rows", (4, 3)), ("scale", (3,)))]


def test_other_runs_get_their_exact_shape_and_old_shapes_are_dropped(model_bytes) -> None:
    create = Counting(model_bytes)
    pinned = ShapePinnedSession(create, max_shapes=2)
    name = pinned.get_inputs()[0].name
    for rows in (3, 5, 3, 6):
        (scores,) = pinned.run(None, {name: batch(rows)})
        assert len(scores) == rows
    assert [shape[0][1][0] for shape in pinned.shapes] == [3, 6]
    assert create.created == 3  # 3, 5, then 6 (3 was still kept when it came back)
    pinned.run(None, {name: batch(5)})
    assert create.created == 4  # 5 had been dropped
    assert pinned.get_inputs()[0].name == name  # metadata from a live session, none kept beyond the shapes


def test_buckets_and_padding() -> None:
    assert [bucket_rows(n) for n in (1, 2, 3, 4, 5, 63, 64, 65)] == [1, 2, 4, 4, 8, 64, 64, 128]
    array = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.testing.assert_array_equal(padded_rows(array, 5), [[0, 1], [2, 3], [4, 5], [4, 5], [4, 5]])
    assert padded_rows(array, 3) is array


def test_only_the_cuda_provider_pins_shapes() -> None:
    assert pins_shapes([(CUDA, {"device_id": 0}), CPU])
    assert pins_shapes([CUDA, CPU])
    assert not pins_shapes([CPU])


@pytest.fixture
def registries(tmp_path, model_bytes, monkeypatch) -> dict[bool, tuple[ModelRegistry, ServerSettings]]:
    """The same model loaded twice: with one session per graph, and with sessions pinned to shapes (as on CUDA)."""
    loaded = {}
    for pinned in (False, True):
        repository = tmp_path / f"pinned_{pinned}"
        write_model(repository, "cnn", model_bytes)
        settings = ServerSettings(model_repository=repository, device="cpu", max_batch_size=6)
        monkeypatch.setattr(session_module, "pins_shapes", lambda providers, pinned=pinned: pinned)
        registry = ModelRegistry(repository, lambda source, settings=settings: load_model(source, settings))
        registry.load("cnn")
        loaded[pinned] = registry, settings
    monkeypatch.setattr(METHODS["rise"], "execution", "graph")
    return loaded


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("rise", {"num_masks": 29, "seed": 3}),
        ("occlusion", {"window": [4, 4], "stride": [3, 3]}),
        ("saliency", {}),
        ("integrated_gradients", {"steps": 7}),
        ("smoothgrad", {"samples": 5, "seed": 1}),
        ("grad_cam", {}),
        ("lrp", {}),
    ],
)
def test_pinned_sessions_give_the_maps_of_one_session(registries, method, params) -> None:
    image = batch(1, seed=9)[0]
    results = {}
    for pinned, (registry, settings) in registries.items():
        query = ExplainQuery(
            model="cnn",
            version="",
            images=[ImageInput(tensor=image)],
            method=method,
            parameters=dict(params),
            targets=[TargetQuery(class_index=c) for c in (0, 3)],
        )
        results[pinned] = explain(registry, query, settings, CancelToken())
    single, pinned = (results[key].explanations[0].attributions for key in (False, True))
    assert len(single) == len(pinned) == 2
    for one, many in zip(single, pinned, strict=True):
        expected = one.attribution
        np.testing.assert_allclose(many.attribution, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    counted = ("forward_passes", "backward_passes", "runs", "batch_size")
    assert [getattr(results[True].cost, f) for f in counted] == [getattr(results[False].cost, f) for f in counted]
    assert registries[True][0].get("cnn").session.pins_shapes
    assert not registries[False][0].get("cnn").session.pins_shapes
