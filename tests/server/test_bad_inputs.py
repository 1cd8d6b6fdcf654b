"""Every bad request gets a clear gRPC status naming the problem, and the server keeps serving afterwards.

Most tests use the session demo server (digits: 28x28 gray, NCHW, 10 classes, labels zero..nine). Requests the
client refuses to build (no images, empty target) go through the raw stub; malformed tensors go through the client
as hand-built `pb.Image` messages, which it passes on untouched.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.models import identity_classifier, write_model
from support.servers import RunningServer, start_server

from onnxplain.client import Client, OnnxplainError, TopK
from onnxplain.server.demo import REPOSITORY, SAMPLES
from onnxplain.v1 import explain_service_pb2 as pb
from onnxplain.v1 import tensor_pb2
from onnxplain.v1.explain_service_pb2_grpc import ExplainServiceStub

DEMO = "digits"
SAMPLE = SAMPLES / "digit_3_clean.png"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
INVALID = grpc.StatusCode.INVALID_ARGUMENT


# ---- helpers -----------------------------------------------------------------------------------------------------


def refused(call: Callable[[], object], code: grpc.StatusCode, *fragments: str) -> str:
    """Run a client call that must fail with `code` and a message containing every fragment; return the message."""
    with pytest.raises(OnnxplainError) as caught:
        call()
    error = caught.value
    assert error.code is code, f"expected {code.name}, got {error.code.name}: {error.message}"
    for fragment in fragments:
        assert fragment.lower() in error.message.lower(), f"{fragment!r} not in {error.message!r}"
    return error.message


def stub_refused(call: Callable[[], object], code: grpc.StatusCode, *fragments: str) -> str:
    """Like `refused`, for raw stub calls that raise grpc.RpcError."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert error.code() is code, f"expected {code.name}, got {error.code().name}: {error.details()}"
    for fragment in fragments:
        assert fragment.lower() in error.details().lower(), f"{fragment!r} not in {error.details()!r}"
    return error.details()


def tensor_image(array: np.ndarray, dtype: int = tensor_pb2.DATA_TYPE_FLOAT32, data: bytes | None = None) -> pb.Image:
    """A wire image built by hand, so dtype, shape and bytes can disagree."""
    raw = np.ascontiguousarray(array).tobytes() if data is None else data
    return pb.Image(tensor=tensor_pb2.Tensor(dtype=dtype, shape=array.shape, data=raw))


def digit_tensor() -> np.ndarray:
    return np.zeros((1, 28, 28), dtype=np.float32)


def png_claiming(height: int, width: int) -> bytes:
    """A PNG signature and a valid IHDR chunk declaring height x width, followed by a tiny bogus body."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    ihdr = struct.pack(">I", len(header)) + b"IHDR" + header + struct.pack(">I", zlib.crc32(b"IHDR" + header))
    return PNG_SIGNATURE + ihdr + b"\x00" * 16


def encoded_png(height: int, width: int) -> bytes:
    pixels = (np.arange(height * width, dtype=np.uint32) % 256).astype(np.uint8).reshape(height, width)
    ok, data = cv2.imencode(".png", pixels)
    assert ok
    return data.tobytes()


def assert_serves_digits(client: Client) -> None:
    prediction = client.predict(DEMO, SAMPLE)
    assert prediction.label == "three"


@pytest.fixture(scope="module")
def stub(demo_server: RunningServer) -> Iterator[ExplainServiceStub]:
    with grpc.insecure_channel(demo_server.target) as channel:
        yield ExplainServiceStub(channel)


# ---- encoded images ----------------------------------------------------------------------------------------------


def test_undecodable_bytes_are_invalid_argument(demo_client: Client) -> None:
    refused(lambda: demo_client.predict(DEMO, b"certainly not an image"), INVALID, "image 0", "not a PNG")


def test_truncated_png_is_invalid_argument(demo_client: Client) -> None:
    data = SAMPLE.read_bytes()
    refused(lambda: demo_client.predict(DEMO, data[: len(data) // 2]), INVALID, "image 0", "could not decode")


def test_empty_bytes_are_invalid_argument(demo_client: Client) -> None:
    refused(lambda: demo_client.predict(DEMO, pb.Image(encoded=b"")), INVALID, "empty")


def test_an_image_with_neither_bytes_nor_tensor_is_invalid_argument(demo_client: Client) -> None:
    refused(lambda: demo_client.predict(DEMO, pb.Image()), INVALID, "neither")


def test_a_png_header_declaring_an_empty_image_is_invalid_argument(demo_client: Client) -> None:
    refused(lambda: demo_client.predict(DEMO, png_claiming(0, 5)), INVALID, "empty image", "0x5")


def test_the_failing_image_is_named_by_its_index(demo_client: Client) -> None:
    refused(lambda: demo_client.predict(DEMO, [SAMPLE, b"junk"]), INVALID, "image 1")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=300), st.binary(max_size=300).map(lambda body: PNG_SIGNATURE + body)))
def test_random_bytes_as_an_encoded_image_are_always_invalid_argument(demo_client: Client, data: bytes) -> None:
    refused(lambda: demo_client.predict(DEMO, pb.Image(encoded=data)), INVALID, "image 0")


# ---- raw tensors ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 27, 28), (3, 28, 28), (28, 28), (1, 1, 28, 28)], ids=str)
def test_a_tensor_of_the_wrong_shape_or_rank_is_invalid_argument(demo_client: Client, shape: tuple) -> None:
    array = np.zeros(shape, dtype=np.float32)
    refused(lambda: demo_client.predict(DEMO, array), INVALID, str(list(shape)), "[1, 28, 28]")


def test_a_float64_tensor_is_invalid_argument_asking_for_float32(demo_client: Client) -> None:
    image = tensor_image(np.zeros((1, 28, 28), dtype=np.float64), tensor_pb2.DATA_TYPE_FLOAT64)
    refused(lambda: demo_client.predict(DEMO, image), INVALID, "float32", "float64")


def test_an_unspecified_dtype_is_invalid_argument(demo_client: Client) -> None:
    image = tensor_image(digit_tensor(), tensor_pb2.DATA_TYPE_UNSPECIFIED)
    refused(lambda: demo_client.predict(DEMO, image), INVALID, "DATA_TYPE_UNSPECIFIED", "FLOAT32")


def test_a_dtype_enum_value_the_server_does_not_know_is_invalid_argument(demo_client: Client) -> None:
    # proto3 enums are open: a newer client may send a value this server has no name for.
    image = tensor_image(digit_tensor(), dtype=99)
    refused(lambda: demo_client.predict(DEMO, image), INVALID, "dtype", "99")


@pytest.mark.parametrize("delta", [-4, 4, -1])
def test_byte_length_not_matching_the_shape_is_invalid_argument(demo_client: Client, delta: int) -> None:
    array = digit_tensor()
    data = array.tobytes()
    data = data[:delta] if delta < 0 else data + b"\x00" * delta
    image = tensor_image(array, data=data)
    refused(lambda: demo_client.predict(DEMO, image), INVALID, f"needs {array.nbytes} bytes", f"got {len(data)}")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_tensor_values_are_invalid_argument(demo_client: Client, value: float) -> None:
    array = digit_tensor()
    array[0, 5, 7] = value
    refused(lambda: demo_client.predict(DEMO, array), INVALID, "NaN or infinite")


def test_a_tensor_naming_absurd_dimensions_is_invalid_argument_naming_the_image(demo_client: Client) -> None:
    # An empty tensor passes the byte count whatever its other dimensions claim.
    image = pb.Image(tensor=tensor_pb2.Tensor(dtype=tensor_pb2.DATA_TYPE_FLOAT32, shape=[0, 2**62], data=b""))
    refused(lambda: demo_client.predict(DEMO, image), INVALID, "image 0", "beyond the limits")


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"seed": 1e308}, "at most 1e+15 in magnitude"),
        ({"seed": -1}, "must be at least 0"),
        ({"steps": 1001}, "gausslegendre takes at most 1000 steps"),
    ],
)
def test_parameters_beyond_what_the_method_can_compute_are_invalid_argument(
    demo_client: Client, parameters: dict, message: str
) -> None:
    method = "integrated_gradients" if "steps" in parameters else "smoothgrad"
    refused(lambda: demo_client.explain(DEMO, digit_tensor(), method=method, **parameters), INVALID, message)


# ---- models and versions -------------------------------------------------------------------------------------------


def test_an_unknown_model_is_not_found_and_the_known_ones_are_listed(demo_client: Client) -> None:
    refused(lambda: demo_client.predict("nope", SAMPLE), grpc.StatusCode.NOT_FOUND, "'nope'", DEMO)
    refused(lambda: demo_client.explain("nope", SAMPLE), grpc.StatusCode.NOT_FOUND, "'nope'")
    refused(lambda: demo_client.metadata("nope"), grpc.StatusCode.NOT_FOUND, "'nope'")


def test_an_unknown_version_of_a_known_model_is_not_found(demo_client: Client) -> None:
    refused(lambda: demo_client.predict(DEMO, SAMPLE, version="7"), grpc.StatusCode.NOT_FOUND, "version '7'")
    refused(lambda: demo_client.metadata(DEMO, "7"), grpc.StatusCode.NOT_FOUND, "version '7'")


# ---- explain: method, parameters, targets, rendering -----------------------------------------------------------------


def test_an_unknown_method_is_invalid_argument_listing_the_methods(demo_client: Client) -> None:
    refused(lambda: demo_client.explain(DEMO, SAMPLE, method="nope"), INVALID, "unknown method 'nope'", "occlusion")


def test_an_unknown_parameter_is_invalid_argument_listing_the_parameters(demo_client: Client) -> None:
    refused(lambda: demo_client.explain(DEMO, SAMPLE, windw=4), INVALID, "windw", "window", "stride")


@pytest.mark.parametrize(
    ("params", "fragments"),
    [
        ({"window": -3}, ("'window'", "positive")),
        ({"window": 0}, ("'window'", "positive")),
        ({"window": (4, 0)}, ("'window'", "positive")),
        ({"window": 4, "stride": 0}, ("'stride'", "positive")),
        ({"window": 4, "stride": 5}, ("'stride'", "larger than the window")),
        ({"window": 29}, ("'window'", "larger than the image 28x28")),
        ({"window": (4, 4, 4)}, ("'window'", "two")),
        ({"window": 2.5}, ("'window'", "integer")),
        ({"baseline": "grey"}, ("'baseline'", "mean", "blur")),
    ],
    ids=["window-negative", "window-0", "window-width-0", "stride-0", "stride-over-window", "window-over-image",
         "window-3-values", "window-fractional", "baseline-unknown"],
)  # fmt: skip
def test_bad_occlusion_parameters_are_invalid_argument_naming_the_parameter(
    demo_client: Client, params: dict, fragments: tuple[str, ...]
) -> None:
    refused(lambda: demo_client.explain(DEMO, SAMPLE, **params), INVALID, *fragments)


@pytest.mark.parametrize("target", [10, -1, 1000])
def test_a_target_class_out_of_range_is_invalid_argument(demo_client: Client, target: int) -> None:
    refused(lambda: demo_client.explain(DEMO, SAMPLE, target=target), INVALID, f"class {target}", "10 classes")


def test_an_unknown_target_label_is_invalid_argument_listing_the_labels(demo_client: Client) -> None:
    refused(lambda: demo_client.explain(DEMO, SAMPLE, target="eleven"), INVALID, "'eleven'", "zero", "nine")


# Saliency ranks its top classes in its own backward run, occlusion scores the image first: both check top_k alike.
@pytest.mark.parametrize("method", ["occlusion", "saliency"])
def test_a_target_top_k_above_the_class_count_is_invalid_argument(demo_client: Client, method: str) -> None:
    refused(lambda: demo_client.explain(DEMO, SAMPLE, method=method, target=TopK(11)), INVALID, "top_k", "10", "11")


def test_an_empty_target_is_invalid_argument(stub: ExplainServiceStub) -> None:
    request = pb.ExplainRequest(
        model_name=DEMO, images=[pb.Image(encoded=SAMPLE.read_bytes())], method="occlusion", targets=[pb.Target()]
    )
    stub_refused(lambda: stub.Explain(request, timeout=30), INVALID, "target", "class_index")


def test_a_negative_predict_top_k_is_invalid_argument(demo_client: Client) -> None:
    refused(lambda: demo_client.predict(DEMO, SAMPLE, top_k=-1), INVALID, "top_k", "-1")


def test_requests_without_images_are_invalid_argument(stub: ExplainServiceStub) -> None:
    stub_refused(lambda: stub.Predict(pb.PredictRequest(model_name=DEMO), timeout=30), INVALID, "no images")
    explain = pb.ExplainRequest(model_name=DEMO, method="occlusion")
    stub_refused(lambda: stub.Explain(explain, timeout=30), INVALID, "no images")


def test_more_images_than_the_request_limit_is_invalid_argument(demo_client: Client) -> None:
    images = [digit_tensor()] * 65
    refused(lambda: demo_client.predict(DEMO, images), INVALID, "65 images", "limit is 64")


def test_a_bad_parameter_in_a_streamed_explain_is_invalid_argument(demo_client: Client) -> None:
    refused(lambda: list(demo_client.explain_stream(DEMO, SAMPLE, window=0)), INVALID, "'window'", "positive")


def test_an_unknown_colormap_is_invalid_argument(demo_client: Client) -> None:
    call = lambda: demo_client.explain(DEMO, SAMPLE, overlay=True, colormap="nope")  # noqa: E731
    refused(call, INVALID, "colormap 'nope'", "jet")


def test_an_overlay_alpha_out_of_range_is_invalid_argument(stub: ExplainServiceStub) -> None:
    request = pb.ExplainRequest(
        model_name=DEMO,
        images=[pb.Image(encoded=SAMPLE.read_bytes())],
        method="occlusion",
        render=pb.RenderOptions(overlay_png=True, alpha=2.0),
    )
    stub_refused(lambda: stub.Explain(request, timeout=30), INVALID, "alpha", "2")


def test_an_unknown_polarity_number_is_invalid_argument(stub: ExplainServiceStub) -> None:
    """A polarity this server does not know (sent by a newer client) is refused, not drawn as another one."""
    request = pb.ExplainRequest(
        model_name=DEMO,
        images=[pb.Image(encoded=SAMPLE.read_bytes())],
        method="saliency",
        render=pb.RenderOptions(overlay_png=True, polarity=9),
    )
    stub_refused(lambda: stub.Explain(request, timeout=30), INVALID, "polarity", "9")


# ---- image size limit ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_limit_client() -> Iterator[Client]:
    server = start_server(REPOSITORY, "--max-image-pixels", "10000")
    try:
        with Client(server.target, timeout=60) as client:
            yield client
    finally:
        assert server.stop() == 0, "".join(server.output)


def test_an_image_above_the_pixel_limit_is_refused_naming_the_limit(small_limit_client: Client) -> None:
    big = encoded_png(200, 200)
    refused(lambda: small_limit_client.predict(DEMO, big), INVALID, "200x200", "40000 pixels", "limit of 10000")


def test_an_image_exactly_at_the_pixel_limit_is_served(small_limit_client: Client) -> None:
    assert small_limit_client.predict(DEMO, encoded_png(100, 100)).scores.shape == (10,)


def test_a_png_header_claiming_a_huge_image_is_refused_quickly_before_decoding(demo_client: Client) -> None:
    bomb = png_claiming(60000, 60000)
    assert len(bomb) < 100
    # A decoder would fail on the bogus body; only the header check can name the declared size and the limit.
    refused(lambda: demo_client.predict(DEMO, bomb), INVALID, "60000x60000", "limit")


# ---- a repository with a broken model and a model without preprocessing --------------------------------------------


@pytest.fixture(scope="module")
def mixed_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    repository: Path = tmp_path_factory.mktemp("mixed")
    write_model(repository, "rows", identity_classifier(classes=4, size=8))
    write_model(repository, "broken", b"this is not an ONNX model, just some text " * 8)
    server = start_server(repository)
    try:
        with Client(server.target, timeout=60) as client:
            yield client
    finally:
        assert server.stop() == 0, "".join(server.output)


def rows_tensor() -> np.ndarray:
    return np.arange(32, dtype=np.float32).reshape(1, 4, 8)


def test_a_model_file_that_is_not_onnx_is_listed_unavailable_with_a_reason(mixed_client: Client) -> None:
    statuses = {status.name: status for status in mixed_client.models()}
    assert statuses["broken"].state == "unavailable"
    assert "not a readable ONNX model" in statuses["broken"].reason
    assert statuses["rows"].state == "ready"
    metadata = mixed_client.metadata("broken")
    assert metadata.state == "unavailable"
    assert "not a readable ONNX model" in metadata.reason


def test_predicting_on_an_unloadable_model_is_unavailable_with_the_reason(mixed_client: Client) -> None:
    refused(
        lambda: mixed_client.predict("broken", rows_tensor()),
        grpc.StatusCode.UNAVAILABLE,
        "'broken'",
        "unavailable",
        "not a readable ONNX model",
    )
    assert mixed_client.predict("rows", rows_tensor()).class_index == 3


def test_an_encoded_image_for_a_model_without_preprocessing_asks_for_a_raw_tensor(mixed_client: Client) -> None:
    refused(lambda: mixed_client.predict("rows", SAMPLE), INVALID, "raw tensor", "float32", "[1, 4, 8]")


# ---- still serving ---------------------------------------------------------------------------------------------------


def test_the_server_still_serves_after_a_burst_of_bad_requests(
    demo_server: RunningServer, demo_client: Client, stub: ExplainServiceStub
) -> None:
    nan = digit_tensor()
    nan[0, 0, 0] = np.nan
    bad_calls = [
        lambda: demo_client.predict(DEMO, b"junk"),
        lambda: demo_client.predict(DEMO, png_claiming(60000, 60000)),
        lambda: demo_client.predict(DEMO, tensor_image(digit_tensor(), dtype=99)),
        lambda: demo_client.predict(DEMO, tensor_image(digit_tensor(), data=b"\x00")),
        lambda: demo_client.predict(DEMO, nan),
        lambda: demo_client.predict("nope", SAMPLE),
        lambda: demo_client.explain(DEMO, SAMPLE, method="nope"),
        lambda: demo_client.explain(DEMO, SAMPLE, window=0),
        lambda: demo_client.explain(DEMO, SAMPLE, target=10),
        lambda: demo_client.explain(DEMO, SAMPLE, colormap="nope"),
        lambda: stub.Predict(pb.PredictRequest(model_name=DEMO), timeout=30),
    ]
    for call in bad_calls * 3:
        with pytest.raises((OnnxplainError, grpc.RpcError)):
            call()
    assert demo_server.process.poll() is None, "".join(demo_server.output)
    assert_serves_digits(demo_client)
    explanation = demo_client.explain(DEMO, SAMPLE, window=4)
    assert explanation.attribution.shape == (28, 28)
