"""Responses above --max-message-bytes are refused with RESOURCE_EXHAUSTED before any method pass, and the estimate
that decides it is an upper bound of the encoded response, close to it for float maps.

References: the encoded protobuf's own ByteSize (api/convert.py builds the message the server sends), and counts of
the passes a refused request started, taken from the handler's own calls.
"""

from __future__ import annotations

import re
from dataclasses import replace

import cv2
import grpc
import numpy as np
import pytest
from support.servers import start_server

from onnxplain.server.api.convert import explain_response
from onnxplain.server.demo import REPOSITORY, SAMPLES
from onnxplain.server.engine.cancel import CancelToken
from onnxplain.server.errors import ResourceExhausted
from onnxplain.server.handlers import explain as explain_handler
from onnxplain.server.handlers.infer import InferQuery, NamedTensor, infer
from onnxplain.server.handlers.predict import predict
from onnxplain.server.handlers.response_size import check_response_size
from onnxplain.server.handlers.schema import ExplainQuery, ImageInput, PredictQuery, RenderQuery, TargetQuery
from onnxplain.server.methods.registry import METHODS
from onnxplain.server.repository.loader import load_model
from onnxplain.server.repository.registry import ModelRegistry
from onnxplain.server.settings import ServerSettings
from onnxplain.v1 import explain_service_pb2 as pb
from onnxplain.v1.explain_service_pb2_grpc import ExplainServiceStub

MODEL = "digits"
SAMPLE = (SAMPLES / "digit_3_clean.png").read_bytes()
# An upload far larger than the model's 28x28 input: its maps over the original image dominate the response.
UPLOAD_SIZE = (300, 400)
ESTIMATE = re.compile(r"up to (\d+) bytes, above the server's --max-message-bytes of (\d+)")


@pytest.fixture(scope="module")
def settings() -> ServerSettings:
    return ServerSettings(model_repository=REPOSITORY, threads=1)


@pytest.fixture(scope="module")
def registry(settings: ServerSettings) -> ModelRegistry:
    registry = ModelRegistry(REPOSITORY, lambda source: load_model(source, settings))
    registry.load_latest_versions()
    return registry


@pytest.fixture
def estimates(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every estimate the Explain handler checks, in order."""
    seen: list[int] = []

    def recording(estimate: int, *checked: object) -> None:
        seen.append(estimate)
        check_response_size(estimate, *checked)

    monkeypatch.setattr(explain_handler, "check_response_size", recording)
    return seen


def upload() -> bytes:
    """The sample digit, scaled up to UPLOAD_SIZE (PNG)."""
    picture = cv2.imdecode(np.frombuffer(SAMPLE, np.uint8), cv2.IMREAD_GRAYSCALE)
    height, width = UPLOAD_SIZE
    return cv2.imencode(".png", cv2.resize(picture, (width, height), interpolation=cv2.INTER_NEAREST))[1].tobytes()


def explain_query(method: str, top_k: int, **options: object) -> ExplainQuery:
    images = [ImageInput(encoded=upload()), ImageInput(encoded=SAMPLE)]
    return ExplainQuery(MODEL, "", images, method, targets=[TargetQuery(top_k=top_k)], **options)


def test_every_method_response_is_within_its_estimate(
    registry: ModelRegistry, settings: ServerSettings, estimates: list[int]
) -> None:
    """Maps, original maps, overlays and each method's side outputs (segments, extras, CLEAR's class picture)."""
    for name in sorted(METHODS):
        query = explain_query(name, 2, render=RenderQuery(), original_maps=True, attribution_shape="input")
        result = explain_handler.explain(registry, query, settings, CancelToken())
        size = explain_response(result).ByteSize()
        assert size <= estimates[-1], f"{name}: {size} bytes encoded, estimated {estimates[-1]}"


@pytest.mark.parametrize("shape", ["spatial", "input"])
def test_float_map_estimate_is_tight(
    registry: ModelRegistry, settings: ServerSettings, estimates: list[int], shape: str
) -> None:
    result = explain_handler.explain(
        registry, explain_query("saliency", 10, original_maps=True, attribution_shape=shape), settings, CancelToken()
    )
    size = explain_response(result).ByteSize()
    assert 0.9 * estimates[-1] <= size <= estimates[-1]


def test_predict_and_infer_responses_are_refused_before_their_pass(
    registry: ModelRegistry, settings: ServerSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = registry.get(MODEL, "")
    monkeypatch.setattr(model.session, "run", lambda *args: pytest.fail("the pass ran"))
    limits = replace(settings.limits, max_message_bytes=10_000)
    # 64 images' scores and top 10 classes with their labels take about 18 KB.
    query = PredictQuery(MODEL, "", [ImageInput(encoded=SAMPLE)] * 64, top_k=10)
    with pytest.raises(ResourceExhausted, match=ESTIMATE.pattern):
        predict(registry, query, limits, CancelToken())
    batch = np.zeros((64, 1, 28, 28), np.float32)
    limits = replace(settings.limits, max_message_bytes=64 * 10 * 4)  # the scores alone
    with pytest.raises(ResourceExhausted, match=ESTIMATE.pattern):
        infer(registry, InferQuery(MODEL, "", [NamedTensor("image", batch)], []), limits, CancelToken())


@pytest.fixture
def passes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The passes the Explain handler starts: its scoring forward pass and each method run."""
    started: list[str] = []
    score_images, run_method = explain_handler.score_images, explain_handler.run_method

    def scoring(*args: object, **kwargs: object) -> object:
        started.append("score_images")
        return score_images(*args, **kwargs)

    def running(*args: object, **kwargs: object) -> object:
        started.append("run_method")
        return run_method(*args, **kwargs)

    monkeypatch.setattr(explain_handler, "score_images", scoring)
    monkeypatch.setattr(explain_handler, "run_method", running)
    return started


def explain_request(method: str, top_k: int) -> pb.ExplainRequest:
    """explain_query's request as a client sends it."""
    images = [pb.Image(encoded=upload()), pb.Image(encoded=SAMPLE)]
    targets = [pb.Target(top_k=top_k)]
    return pb.ExplainRequest(model_name=MODEL, images=images, method=method, targets=targets, original_maps=True)


def test_a_response_at_the_limit_is_sent_and_one_above_it_is_refused(
    registry: ModelRegistry, settings: ServerSettings, estimates: list[int]
) -> None:
    explain_handler.explain(registry, explain_query("saliency", 3, original_maps=True), settings, CancelToken())
    limit = estimates[-1]
    server = start_server(REPOSITORY, "--max-message-bytes", str(limit))
    options = [("grpc.max_receive_message_length", -1)]
    try:
        with grpc.insecure_channel(server.target, options=options) as channel:
            stub = ExplainServiceStub(channel)
            response = stub.Explain(explain_request("saliency", 3), timeout=60)
            with pytest.raises(grpc.RpcError) as caught:
                stub.Explain(explain_request("saliency", 4), timeout=60)
    finally:
        assert server.stop() == 0, "".join(server.output)
    assert 0.9 * limit <= response.ByteSize() <= limit
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value.details()
    estimate, stated_limit = map(int, ESTIMATE.search(caught.value.details()).groups())
    assert stated_limit == limit
    # A fourth map over the 300 x 400 upload: 480 KB more.
    assert estimate > limit + 4 * UPLOAD_SIZE[0] * UPLOAD_SIZE[1]


@pytest.mark.parametrize("method", ["saliency", "occlusion"])
def test_a_refused_response_runs_no_method_pass(
    registry: ModelRegistry, settings: ServerSettings, estimates: list[int], passes: list[str], method: str
) -> None:
    query = explain_query(method, 3, original_maps=True)
    explain_handler.explain(registry, query, settings, CancelToken())
    limited = replace(settings, limits=replace(settings.limits, max_message_bytes=estimates[-1] - 1))
    passes.clear()
    with pytest.raises(ResourceExhausted, match=ESTIMATE.pattern):
        explain_handler.explain(registry, query, limited, CancelToken())
    # A single-pass method ranks its targets in its own run: nothing ran. Others scored the images to rank them.
    assert passes == ([] if METHODS[method].single_pass else ["score_images"])
