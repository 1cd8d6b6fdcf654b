"""RISE through one derived ONNX graph gives the host path's maps and pass counts, on NCHW and NHWC models, opsets
11 and 17, logits and softmax outputs, fixed and dynamic batches; the graph is built once per model and shape and
reused by later requests; cancellation and progress work as on the host; and "auto" picks the measured path."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from support.models import ChannelsLast, SmallCNN, WithSoftmax, export, write_model

from onnxplain.server.engine.cancel import CancelToken
from onnxplain.server.errors import Cancelled, FailedPrecondition
from onnxplain.server.handlers.explain import explain
from onnxplain.server.handlers.schema import ExplainProgress, ExplainQuery, ExplainResult, ImageInput, TargetQuery
from onnxplain.server.methods import rise_graph
from onnxplain.server.methods.registry import METHODS
from onnxplain.server.repository.loader import load_model
from onnxplain.server.repository.registry import ModelRegistry
from onnxplain.server.settings import ServerSettings

NCHW_SHAPE = (3, 20, 18)
NHWC_SHAPE = (20, 18, 3)
TARGETS = [0, 2, 4]
# Small batches, so a request runs several of them and a short last one.
MAX_BATCH = 7

MODELS = {
    "cnn": lambda: export(SmallCNN(seed=2), (1, *NCHW_SHAPE)),
    "cnn_opset11": lambda: export(SmallCNN(seed=3), (1, *NCHW_SHAPE), opset=11),
    "nhwc": lambda: export(ChannelsLast(SmallCNN(seed=4)), (1, *NHWC_SHAPE)),
    "softmax": lambda: export(WithSoftmax(SmallCNN(seed=5)), (1, *NCHW_SHAPE)),
    "softmax_opset11": lambda: export(WithSoftmax(SmallCNN(seed=6)), (1, *NCHW_SHAPE), opset=11),
    "fixed_batch4": lambda: export(SmallCNN(seed=7), (4, *NCHW_SHAPE), dynamic_batch=False),
}


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> ServerSettings:
    repository = tmp_path_factory.mktemp("repository")
    for name, model in MODELS.items():
        write_model(repository, name, model())
    return ServerSettings(model_repository=repository, device="cpu", max_batch_size=MAX_BATCH)


@pytest.fixture(scope="module")
def registry(settings) -> ModelRegistry:
    loaded = ModelRegistry(settings.model_repository, lambda source: load_model(source, settings))
    for name in MODELS:
        loaded.load(name)
    return loaded


def image_for(model: str, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=NHWC_SHAPE if model == "nhwc" else NCHW_SHAPE).astype(np.float32)


def run_rise(
    registry: ModelRegistry,
    settings: ServerSettings,
    monkeypatch: pytest.MonkeyPatch,
    execution: str,
    model: str,
    *,
    images: list[np.ndarray] | None = None,
    score_space: str = "raw",
    token: CancelToken | None = None,
    progress=None,
    **params,
) -> ExplainResult:
    monkeypatch.setattr(METHODS["rise"], "execution", execution)
    query = ExplainQuery(
        model=model,
        version="",
        images=[ImageInput(tensor=image) for image in (images or [image_for(model)])],
        method="rise",
        parameters={"num_masks": 60, **params},
        targets=[TargetQuery(class_index=c) for c in TARGETS],
        score_space=score_space,
    )
    return explain(registry, query, settings, token or CancelToken(), progress)


def maps_of(result: ExplainResult) -> np.ndarray:
    return np.stack([[t.attribution for t in image.attributions] for image in result.explanations])


def passes_of(result: ExplainResult) -> tuple[int, int, int, int]:
    cost = result.cost
    return cost.forward_passes, cost.backward_passes, cost.runs, cost.batch_size


def assert_same_maps(graph: ExplainResult, host: ExplainResult) -> None:
    expected = maps_of(host)
    np.testing.assert_allclose(maps_of(graph), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    assert passes_of(graph) == passes_of(host)


@pytest.mark.parametrize(
    ("model", "score_space", "params"),
    [
        ("cnn", "raw", {}),
        ("cnn", "raw", {"normalization": "mask_sum", "fill": -0.7, "grid_size": 4, "keep_prob": 0.3, "seed": 5}),
        ("cnn", "probability", {"fill": "blur", "grid_size": 3}),
        ("cnn_opset11", "raw", {"normalization": "mask_sum", "fill": "mean"}),
        ("cnn_opset11", "probability", {"seed": 3}),
        ("nhwc", "raw", {"fill": "mean", "seed": 1}),
        ("nhwc", "probability", {"normalization": "mask_sum", "fill": "blur", "grid_size": 5}),
        ("softmax", "probability", {"seed": 2}),
        ("softmax", "raw", {"normalization": "mask_sum"}),
        ("softmax_opset11", "probability", {"fill": 0.5}),
        ("fixed_batch4", "raw", {"num_masks": 61, "normalization": "mask_sum", "fill": "mean"}),
    ],
)
def test_the_graph_path_equals_the_host_path(registry, settings, monkeypatch, model, score_space, params) -> None:
    host = run_rise(registry, settings, monkeypatch, "host", model, score_space=score_space, **params)
    graph = run_rise(registry, settings, monkeypatch, "graph", model, score_space=score_space, **params)
    assert_same_maps(graph, host)


def test_the_fixed_batch_model_runs_in_chunks_of_its_size(registry, settings, monkeypatch) -> None:
    graph = run_rise(registry, settings, monkeypatch, "graph", "fixed_batch4", num_masks=61)
    # The base pass (1 image, one run) and 61 masks in runs of 4, the last one padded.
    assert passes_of(graph) == (62, 0, 1 + 16, 4)


def test_the_derived_graph_is_built_once_and_reused(registry, settings, monkeypatch) -> None:
    derived = registry.get("cnn").derived
    builds = derived.builds
    first = run_rise(registry, settings, monkeypatch, "graph", "cnn", grid_size=6, seed=8)
    assert derived.builds == builds + 1
    # Another request, other targets' scores, another image, two images in one request: the same graph.
    images = [image_for("cnn", 1), image_for("cnn", 2)]
    again = run_rise(registry, settings, monkeypatch, "graph", "cnn", grid_size=6, seed=8, images=images)
    run_rise(registry, settings, monkeypatch, "graph", "cnn", grid_size=6, normalization="mask_sum", fill="blur")
    assert derived.builds == builds + 1
    assert not np.array_equal(maps_of(first)[0], maps_of(again)[0])
    # The grid size is fixed inside the graph, so another one is another graph.
    run_rise(registry, settings, monkeypatch, "graph", "cnn", grid_size=5)
    assert derived.builds == builds + 2


def test_progress_is_reported_per_batch_as_on_the_host(registry, settings, monkeypatch) -> None:
    done: dict[str, list[int]] = {"host": [], "graph": []}
    for execution, seen in done.items():

        def record(event: ExplainProgress, seen: list[int] = seen) -> None:
            seen.append(event.passes_done)

        run_rise(registry, settings, monkeypatch, execution, "cnn", num_masks=20, progress=record)
    assert done["graph"] == done["host"] == [7, 14, 20]


def test_a_cancel_stops_the_graph_path_between_batches(registry, settings, monkeypatch) -> None:
    token = CancelToken()
    batches: list[int] = []

    def cancel_after_the_first_batch(event: ExplainProgress) -> None:
        batches.append(event.passes_done)
        token.cancel()

    with pytest.raises(Cancelled):
        run_rise(registry, settings, monkeypatch, "graph", "cnn", token=token, progress=cancel_after_the_first_batch)
    assert batches == [MAX_BATCH]


def test_auto_runs_in_the_graph_on_cuda_and_on_the_cpu_as_measured(registry) -> None:
    signature = registry.get("cnn").signature

    def job(provider: str, dtype: str = "float") -> SimpleNamespace:
        model_signature = replace(signature, input=replace(signature.input, dtype=dtype))
        session = SimpleNamespace(providers=[provider])
        return SimpleNamespace(model=SimpleNamespace(name="cnn", signature=model_signature, session=session))

    assert rise_graph.runs_in_graph(job("CUDAExecutionProvider"), "auto")
    assert rise_graph.runs_in_graph(job("CPUExecutionProvider"), "auto") == rise_graph.CPU_RUNS_IN_GRAPH
    assert not rise_graph.runs_in_graph(job("CUDAExecutionProvider"), "host")
    assert rise_graph.runs_in_graph(job("CPUExecutionProvider"), "graph")
    # A float16 model stays on the host under "auto" and is refused by name under "graph".
    assert not rise_graph.runs_in_graph(job("CUDAExecutionProvider", "float16"), "auto")
    with pytest.raises(FailedPrecondition, match="float16"):
        rise_graph.runs_in_graph(job("CUDAExecutionProvider", "float16"), "graph")
