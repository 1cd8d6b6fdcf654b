"""Fuzz: hypothesis-generated hostile requests against a live server. Every answer is a proper status a client can act
on, never a crash, a hang, INTERNAL or UNKNOWN, and the server still answers a normal Predict after each one.

The requests go through the raw stub, so they can be what the client library refuses to build: tensors whose
dtype, shape and bytes disagree, huge or zero dimensions, NaN, truncated and corrupt PNG/JPEG, decompression bombs,
unknown enum values, extreme numbers in parameters, random methods, metrics, targets and regions. Beside the random
examples, named hostile images go through every RPC and a sweep gives every method and metric parameter each extreme
value. A second server holds models whose model.onnx is random bytes or a damaged real model.

Examples are derandomized, so CI runs the same requests every time; each call has a short deadline so a hang fails
fast instead of stalling the suite, and the servers run under an address-space cap so unbounded allocation fails
instead of exhausting the machine.
"""

from __future__ import annotations

import functools
import json
import math
import random
import resource
import shutil
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from support.resident import memory
from support.servers import RunningServer, start_server

from onnxplain.server.demo import REPOSITORY, SAMPLES
from onnxplain.server.evaluation.metrics import METRICS
from onnxplain.server.methods.registry import METHODS
from onnxplain.v1 import explain_service_pb2 as pb
from onnxplain.v1 import model_pb2, tensor_pb2
from onnxplain.v1.explain_service_pb2_grpc import ExplainServiceStub

DEMO = "digits"
CALL_SECONDS = 20.0
# What a client mistake may get. INTERNAL, UNKNOWN, UNAVAILABLE and DEADLINE_EXCEEDED (a hang) never are.
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
# No shrinking: shrinking a failure walks through ever smaller values, and a count parameter the server does not
# bound would then allocate real memory; the failing example as drawn, with the server's traceback, says enough.
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---- hostile bytes, made at import from the demo sample ------------------------------------------------------------


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, position = [], len(PNG_SIGNATURE)
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        chunks.append((data[position + 4 : position + 8], data[position + 8 : position + 8 + length]))
        position += 12 + length
    return chunks


def with_corrupt_idat(png: bytes, seed: int) -> bytes:
    """The same header, pixel data replaced by random bytes under a correct CRC: only inflating it can fail."""
    rng = random.Random(seed)
    parts = [PNG_SIGNATURE]
    for kind, body in png_chunks(png):
        parts.append(png_chunk(kind, rng.randbytes(len(body)) if kind == b"IDAT" else body))
    return b"".join(parts)


def png_bomb(height: int, width: int) -> bytes:
    """A gray PNG declaring height x width whose pixel data is deflated zeros: tiny on the wire, huge inflated."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = min(height, 64)  # enough compressed rows to start inflating; the rest is missing, as a bomb's may be
    idat = zlib.compress(b"\x00" * (rows * (width + 1)), 9)
    return PNG_SIGNATURE + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def jpeg_claiming(height: int, width: int) -> bytes:
    """A real JPEG whose frame header is rewritten to declare height x width."""
    data = bytearray(SAMPLE_JPEG)
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


SAMPLE = SAMPLES / "digit_3_clean.png"
SAMPLE_PNG = SAMPLE.read_bytes()
_PIXELS = cv2.imread(str(SAMPLE), cv2.IMREAD_GRAYSCALE)
SAMPLE_JPEG = cv2.imencode(".jpg", _PIXELS)[1].tobytes()
COLOR_PNG_16BIT = cv2.imencode(".png", (cv2.cvtColor(_PIXELS, cv2.COLOR_GRAY2BGRA).astype(np.uint16) * 257))[1]
VALID_ENCODED = [SAMPLE_PNG, SAMPLE_JPEG, COLOR_PNG_16BIT.tobytes(), cv2.imencode(".png", _PIXELS[:1, :1])[1].tobytes()]
HOSTILE_ENCODED = {
    "png-bomb-100000x100000": png_bomb(100_000, 100_000),
    "png-bomb-just-under-the-limit": png_bomb(6000, 6000),
    "jpeg-claiming-65000x65000": jpeg_claiming(65_000, 65_000),
    "jpeg-claiming-0x28": jpeg_claiming(0, 28),
    "png-corrupt-idat": with_corrupt_idat(SAMPLE_PNG, seed=0),
    "png-truncated": SAMPLE_PNG[: len(SAMPLE_PNG) // 2],
    "jpeg-truncated": SAMPLE_JPEG[: len(SAMPLE_JPEG) // 2],
    "png-signature-only": PNG_SIGNATURE,
    "bmp-negative-height": b"BM" + b"\x00" * 12 + struct.pack("<Iii", 40, 28, -(2**31)) + b"\x00" * 32,
}


# ---- strategies -----------------------------------------------------------------------------------------------------
# A request breaks one field at a time (or none), so the examples get past the first check to the code behind it:
# parameters, targets, rendering, metrics, regions. Values are hostile: extreme numbers, unknown enum numbers, huge
# or zero dimensions, NaN and Inf, bytes that are not what they claim.

NUMBERS = [0.0, -1.0, 0.5, 1.0, 2.0, 1e308, -1e308, 1e-308, 5e-324, math.nan, math.inf, -math.inf]
INTEGERS = [0, -1, 1, 2, 3, 9, 10, 2**31, 2**62, 2**63 - 1, -(2**63)]
TEXTS = ["", "mean", "blur", "slic", "grid", "keep_prob", "mask_sum", "noise", "black", "auto", "jet", "nope"]
DIMENSIONS = [0, 1, 3, 28, 1 << 31, 1 << 62, 2**63 - 1, -1]
NUMPY_DTYPES = {
    tensor_pb2.DATA_TYPE_FLOAT32: np.float32,
    tensor_pb2.DATA_TYPE_FLOAT16: np.float16,
    tensor_pb2.DATA_TYPE_FLOAT64: np.float64,
    tensor_pb2.DATA_TYPE_UINT8: np.uint8,
    tensor_pb2.DATA_TYPE_INT32: np.int32,
    tensor_pb2.DATA_TYPE_INT64: np.int64,
}
MAX_TENSOR_BYTES = 1 << 20

numbers = st.sampled_from(NUMBERS) | st.floats(allow_nan=True, allow_infinity=True)
integers = st.sampled_from(INTEGERS) | st.integers(-(2**63), 2**63 - 1)
texts = st.sampled_from(TEXTS) | st.text(max_size=16)
unknown_enums = st.integers(-2, 12)  # proto3 enums are open: numbers this server has no name for arrive too


@st.composite
def tensors(draw: st.DrawFn, shape: tuple[int, ...]) -> tensor_pb2.Tensor:
    """The given shape in float32 values in [0, 1], with one thing wrong: the dtype number, the dims, a NaN/Inf/extreme
    value, or the byte count."""
    wrong = draw(st.sampled_from(["nothing", "dtype", "dims", "value", "bytes"]))
    dtype = draw(st.sampled_from(list(NUMPY_DTYPES)) | st.integers(-3, 99)) if wrong == "dtype" else 1
    dims = list(shape)
    if wrong == "dims":
        dims = draw(st.lists(st.sampled_from(DIMENSIONS) | st.integers(0, 40), max_size=5))
    numpy_dtype = np.dtype(NUMPY_DTYPES.get(dtype, np.float32))
    count = math.prod(dims) if all(d >= 0 for d in dims) else 0
    if count * numpy_dtype.itemsize > MAX_TENSOR_BYTES:
        count = draw(st.integers(0, 64))  # the dims claim far more than any bytes sent
    values = np.random.default_rng(draw(st.integers(0, 2**16))).uniform(0, 1, count)
    if wrong == "value" and count:
        values[draw(st.integers(0, count - 1))] = draw(st.sampled_from(NUMBERS))
    with np.errstate(over="ignore"):  # 1e308 as float32 is inf: one more hostile value
        data = values.astype(numpy_dtype).tobytes()
    if wrong == "bytes":
        delta = draw(st.sampled_from([-1, 1, -numpy_dtype.itemsize, numpy_dtype.itemsize]))
        data = data[:delta] if delta < 0 else data + b"\x00" * delta
    return tensor_pb2.Tensor(dtype=dtype, shape=dims, data=data)


@st.composite
def damaged_encodings(draw: st.DrawFn) -> bytes:
    valid = draw(st.sampled_from(VALID_ENCODED))
    return draw(
        st.sampled_from(list(HOSTILE_ENCODED.values()))
        | st.binary(max_size=256)
        | st.binary(max_size=256).map(lambda body: PNG_SIGNATURE + body)
        | st.integers(0, len(valid) - 1).map(lambda cut: valid[:cut])
        | st.integers(0, 2**16).map(lambda seed: with_corrupt_idat(SAMPLE_PNG, seed))
    )


def with_segments(image: pb.Image, segments: tensor_pb2.Tensor) -> pb.Image:
    copy = pb.Image()
    copy.CopyFrom(image)
    copy.segments.CopyFrom(segments)
    return copy


def float_image(seed: int) -> pb.Image:
    data = np.random.default_rng(seed).uniform(0, 1, (1, 28, 28)).astype(np.float32).tobytes()
    return pb.Image(tensor=tensor_pb2.Tensor(dtype=tensor_pb2.DATA_TYPE_FLOAT32, shape=[1, 28, 28], data=data))


valid_image = st.sampled_from(VALID_ENCODED).map(lambda data: pb.Image(encoded=data)) | st.integers(0, 99).map(
    float_image
)
hostile_image = st.one_of(
    damaged_encodings().map(lambda data: pb.Image(encoded=data)),
    tensors((1, 28, 28)).map(lambda tensor: pb.Image(tensor=tensor)),
    st.just(pb.Image()),
    st.builds(with_segments, valid_image, tensors((28, 28))),
)
valid_images = st.lists(valid_image, min_size=1, max_size=2)
hostile_images = st.lists(valid_image | hostile_image, max_size=3)


def parameter(kind: str, value: object) -> pb.Parameter:
    if kind == "numbers":
        return pb.Parameter(numbers=pb.NumberList(values=value))
    return pb.Parameter(**{kind: value})


plausible_values = st.one_of(
    st.integers(1, 8).map(lambda value: parameter("integer", value)),
    st.floats(0.05, 0.95).map(lambda value: parameter("number", value)),
    st.booleans().map(lambda value: parameter("flag", value)),
    st.sampled_from(TEXTS).map(lambda value: parameter("text", value)),
    st.lists(st.integers(1, 8).map(float), min_size=2, max_size=2).map(lambda value: parameter("numbers", value)),
)
extreme_values = st.one_of(
    numbers.map(lambda value: parameter("number", value)),
    integers.map(lambda value: parameter("integer", value)),
    texts.map(lambda value: parameter("text", value)),
    st.lists(numbers, max_size=4).map(lambda value: parameter("numbers", value)),
    st.just(pb.Parameter()),
)


def parameters(names: list[str], hostile: bool) -> st.SearchStrategy[dict[str, pb.Parameter]]:
    """A few of the owner's parameters with plausible values; hostile: extreme values, or an unknown name."""
    known = st.sampled_from(names) if names else texts
    if not hostile:
        return st.dictionaries(known, plausible_values, max_size=2)
    extreme = st.dictionaries(known, extreme_values, min_size=1, max_size=2)
    return extreme | st.dictionaries(texts, plausible_values | extreme_values, min_size=1, max_size=2)


METHOD_PARAMETERS = {name: [parameter.name for parameter in method.parameters] for name, method in METHODS.items()}
METRIC_PARAMETERS = {name: [parameter.name for parameter in metric.parameters] for name, metric in METRICS.items()}
hostile_models = st.tuples(
    st.sampled_from(["", "nope", "../digits", "digits/1", "DIGITS", DEMO]) | texts,
    st.sampled_from(["", "1", "2", "-1", "01", "1.0", " 1"]) | texts,
)
plausible_targets = st.one_of(
    st.integers(0, 9).map(lambda value: pb.Target(class_index=value)),
    st.sampled_from(["zero", "three", "nine"]).map(lambda value: pb.Target(label=value)),
    st.integers(1, 3).map(lambda value: pb.Target(top_k=value)),
)
hostile_target = st.one_of(
    integers.map(lambda value: pb.Target(class_index=value)),
    (st.sampled_from(["eleven", "Three", ""]) | texts).map(lambda value: pb.Target(label=value)),
    integers.map(lambda value: pb.Target(top_k=value)),
    st.just(pb.Target()),
)
valid_targets = st.lists(plausible_targets, max_size=2)
hostile_targets = st.lists(plausible_targets | hostile_target, min_size=1, max_size=3)
renders = st.builds(
    pb.RenderOptions,
    overlay_png=st.booleans(),
    colormap=st.sampled_from(["", "jet", "inferno", "viridis"]),
    alpha=st.sampled_from([0.0, 0.3]),
    polarity=st.integers(0, 3),
)
hostile_renders = st.builds(
    pb.RenderOptions,
    overlay_png=st.just(True),
    colormap=st.sampled_from(["", "jet"]) | texts,
    clip_percentile=numbers,
    alpha=numbers,
    polarity=unknown_enums,
)


EXPLAIN_FIELDS = ["nothing", "model", "images", "method", "parameters", "targets", "render", "enums"]
EVALUATE_FIELDS = ["nothing", "model", "images", "explainers", "metrics", "parameters", "regions", "targets", "enums"]
PREDICT_FIELDS = ["nothing", "model", "images", "top_k"]


@st.composite
def explain_requests(draw: st.DrawFn, broken: str) -> pb.ExplainRequest:
    model, version = draw(hostile_models) if broken == "model" else (DEMO, "")
    method = draw(texts) if broken == "method" else draw(st.sampled_from(sorted(METHODS)))
    enums = unknown_enums if broken == "enums" else st.integers(0, 2)
    return pb.ExplainRequest(
        model_name=model,
        model_version=version,
        images=draw(hostile_images if broken == "images" else valid_images),
        method=method,
        # A request with nothing broken is valid: its method's defaults (plausible values may be of the wrong kind).
        parameters={}
        if broken == "nothing"
        else draw(parameters(METHOD_PARAMETERS.get(method, []), hostile=broken == "parameters")),
        targets=draw(hostile_targets if broken == "targets" else valid_targets),
        attribution_shape=draw(enums),
        score_space=draw(enums),
        render=draw(hostile_renders if broken == "render" else renders),
        original_maps=draw(st.booleans()),
    )


hostile_region = st.one_of(
    st.builds(pb.Box, top=integers, left=integers, height=integers, width=integers).map(lambda box: pb.Region(box=box)),
    tensors((112, 112)).map(lambda mask: pb.Region(mask=mask)),
    st.just(pb.Region()),
)
VALID_BOX = pb.Region(box=pb.Box(top=20, left=20, height=60, width=60))  # pixels of the 112x112 sample


@st.composite
def explainers(draw: st.DrawFn, hostile: bool) -> pb.Explainer:
    """A known method with plausible parameters; hostile: a random method, extreme parameters or hostile maps."""
    broken = draw(st.sampled_from(["method", "parameters", "attributions"])) if hostile else "nothing"
    method = draw(texts) if broken == "method" else draw(st.sampled_from(sorted(METHODS)))
    maps = st.lists(tensors((28, 28)) | tensors((1, 28, 28)), min_size=1, max_size=2)
    return pb.Explainer(
        name=draw(st.just("") | texts),
        method=method,
        parameters=draw(parameters(METHOD_PARAMETERS.get(method, []), hostile=broken == "parameters")),
        attributions=draw(maps) if broken == "attributions" else [],
    )


@st.composite
def evaluate_requests(draw: st.DrawFn, broken: str) -> pb.EvaluateRequest:
    model, version = draw(hostile_models) if broken == "model" else (DEMO, "")
    images = draw(hostile_images if broken == "images" else valid_images)
    metrics = draw(st.lists(st.sampled_from(sorted(METRICS)), max_size=2, unique=True))
    if broken == "metrics":
        metrics = [*metrics, draw(texts)]
    metric_parameters = sorted({name for metric in metrics for name in METRIC_PARAMETERS.get(metric, [])})
    regions = st.lists(hostile_region, max_size=3) if broken == "regions" else st.sampled_from([[], [VALID_BOX]])
    return pb.EvaluateRequest(
        model_name=model,
        model_version=version,
        images=images,
        targets=draw(hostile_targets if broken == "targets" else valid_targets),
        explainers=draw(st.lists(explainers(hostile=broken == "explainers"), min_size=1, max_size=2)),
        metrics=metrics,
        parameters=draw(parameters(metric_parameters, hostile=broken == "parameters")),
        regions=[region for region in draw(regions) for _ in images] if broken != "regions" else draw(regions),
        score_space=draw(unknown_enums if broken == "enums" else st.integers(0, 2)),
    )


@st.composite
def predict_requests(draw: st.DrawFn, broken: str) -> pb.PredictRequest:
    model, version = draw(hostile_models) if broken == "model" else (DEMO, "")
    return pb.PredictRequest(
        model_name=model,
        model_version=version,
        images=draw(hostile_images if broken == "images" else valid_images),
        top_k=draw(integers if broken == "top_k" else st.integers(0, 10)),
    )


# ---- the server and the checks ------------------------------------------------------------------------------------
# The servers get a cap on their address space: a request that makes one allocate without bound then fails with a
# MemoryError (INTERNAL, so the test fails) instead of taking the CI machine's memory.
MEMORY_HEADROOM_BYTES = 3 * 1024**3


@dataclass
class Live:
    """A running server with its stub and health check. Its repr stays short: hypothesis prints it with a failure."""

    server: RunningServer
    stub: ExplainServiceStub
    check_healthy: Callable[[RunningServer], None]
    repository: Path = REPOSITORY

    def __repr__(self) -> str:
        return f"Live({self.server.target})"

    def healthy(self) -> None:
        self.check_healthy(self.server)

    def last_error(self, since: int = 0) -> str:
        """The end of the last traceback the server logged after output line `since`: the raising frame and error.
        Called on failures only; waits a moment, as the server's output is read on another thread."""
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            for line in reversed(self.server.output[since:]):
                if '"error": "Traceback' in line:
                    return "\n".join(json.loads(line)["error"].splitlines()[-5:])
            time.sleep(0.1)
        return "(no traceback in the server output)"


@contextmanager
def live_server(repository: Path, healthy: Callable[[RunningServer], None]) -> Iterator[Live]:
    running = start_server(repository)
    cap = memory(running.process.pid)["VmSize"] + MEMORY_HEADROOM_BYTES
    resource.prlimit(running.process.pid, resource.RLIMIT_AS, (cap, cap))
    try:
        with grpc.insecure_channel(running.target) as channel:
            yield Live(running, ExplainServiceStub(channel), healthy, repository)
    finally:
        assert running.stop() == 0, "".join(running.output[-60:])


@pytest.fixture(scope="module")
def live(healthy: Callable[[RunningServer], None]) -> Iterator[Live]:
    with live_server(REPOSITORY, healthy) as running:
        yield running


def outcome(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def describe(request: object) -> str:
    text = str(request)
    return text if len(text) < 3000 else text[:3000] + " ..."


def assert_proper_status(live: Live, request: object, call: Callable[[], object], valid: bool = False) -> None:
    """An allowed status with a message for any refusal (OK for a valid request: the demo supports every method);
    then the server is alive and still serves."""
    since = len(live.server.output)
    code, details = outcome(call)
    event(code.name)  # --hypothesis-show-statistics: how far the examples got
    allowed = {grpc.StatusCode.OK} if valid else ALLOWED
    if code not in allowed or (code is not grpc.StatusCode.OK and not details.strip()):
        pytest.fail(f"{code.name}: {details!r}\nrequest:\n{describe(request)}\nserver:\n{live.last_error(since)}")
    live.healthy()


# ---- the fuzz tests -------------------------------------------------------------------------------------------------
# Parametrized by the field each request breaks, so every field is covered whatever hypothesis draws.


@pytest.mark.parametrize("broken", PREDICT_FIELDS)
@settings(FUZZ, max_examples=6)
@given(data=st.data())
def test_fuzzed_predict_gets_a_proper_status(live: Live, broken: str, data: st.DataObject) -> None:
    request = data.draw(predict_requests(broken))
    assert_proper_status(
        live, request, lambda: live.stub.Predict(request, timeout=CALL_SECONDS), valid=broken == "nothing"
    )


@pytest.mark.parametrize("broken", EXPLAIN_FIELDS)
@settings(FUZZ, max_examples=6)
@given(data=st.data())
def test_fuzzed_explain_gets_a_proper_status(live: Live, broken: str, data: st.DataObject) -> None:
    request = data.draw(explain_requests(broken))
    assert_proper_status(
        live, request, lambda: live.stub.Explain(request, timeout=CALL_SECONDS), valid=broken == "nothing"
    )


@pytest.mark.parametrize("broken", EXPLAIN_FIELDS)
@settings(FUZZ, max_examples=2)
@given(data=st.data())
def test_fuzzed_explain_stream_gets_a_proper_status(live: Live, broken: str, data: st.DataObject) -> None:
    request = data.draw(explain_requests(broken))

    def stream() -> None:
        for _ in live.stub.ExplainStream(pb.ExplainStreamRequest(request=request), timeout=CALL_SECONDS):
            pass

    assert_proper_status(live, request, stream, valid=broken == "nothing")


@pytest.mark.parametrize("broken", EVALUATE_FIELDS)
@settings(FUZZ, max_examples=6)
@given(data=st.data())
def test_fuzzed_evaluate_gets_a_proper_status(live: Live, broken: str, data: st.DataObject) -> None:
    request = data.draw(evaluate_requests(broken))
    assert_proper_status(live, request, lambda: live.stub.Evaluate(request, timeout=CALL_SECONDS))


def empty_tensor(shape: list[int], dtype: int = tensor_pb2.DATA_TYPE_FLOAT32) -> tensor_pb2.Tensor:
    """No bytes, as a shape with a zero needs, whatever the other dims claim."""
    return tensor_pb2.Tensor(dtype=dtype, shape=shape, data=b"")


def huge_tensor_image(shape: list[int]) -> pb.Image:
    return pb.Image(tensor=tensor_pb2.Tensor(dtype=tensor_pb2.DATA_TYPE_FLOAT32, shape=shape, data=bytes(16)))


HOSTILE_IMAGES = {
    **{name: pb.Image(encoded=data) for name, data in HOSTILE_ENCODED.items()},
    "tensor-1x2^31x2^31": huge_tensor_image([1, 1 << 31, 1 << 31]),
    "tensor-int64-max-dims": huge_tensor_image([2**63 - 1, 2**63 - 1]),
    "tensor-zero-dims": huge_tensor_image([0, 28, 28]),
    "tensor-zero-size-huge-dims": pb.Image(tensor=empty_tensor([0, 1 << 62])),
    "segments-zero-size-huge-dims": pb.Image(
        encoded=SAMPLE_PNG, segments=empty_tensor([1 << 62, 0], tensor_pb2.DATA_TYPE_INT32)
    ),
}
RPCS = {
    "Predict": lambda stub, image: stub.Predict(
        pb.PredictRequest(model_name=DEMO, images=[image]), timeout=CALL_SECONDS
    ),
    "Explain": lambda stub, image: stub.Explain(
        pb.ExplainRequest(model_name=DEMO, images=[image], method="saliency"), timeout=CALL_SECONDS
    ),
    "ExplainStream": lambda stub, image: list(
        stub.ExplainStream(
            pb.ExplainStreamRequest(request=pb.ExplainRequest(model_name=DEMO, images=[image], method="saliency")),
            timeout=CALL_SECONDS,
        )
    ),
    "Evaluate": lambda stub, image: stub.Evaluate(
        pb.EvaluateRequest(model_name=DEMO, images=[image], explainers=[pb.Explainer(method="saliency")]),
        timeout=CALL_SECONDS,
    ),
}


@pytest.mark.parametrize("rpc", sorted(RPCS))
@pytest.mark.parametrize("name", sorted(HOSTILE_IMAGES))
def test_each_hostile_image_is_invalid_argument_through_every_rpc(live: Live, rpc: str, name: str) -> None:
    """Bombs are refused from the header before any decoding; truncated and corrupt data fail decoding cleanly;
    tensors whose dims claim more than their bytes, or absurd dims around a zero, are refused by their shape."""
    image = HOSTILE_IMAGES[name]
    since = len(live.server.output)
    code, details = outcome(lambda: RPCS[rpc](live.stub, image))
    assert code is grpc.StatusCode.INVALID_ARGUMENT, f"{code.name}: {details}\n{live.last_error(since)}"
    assert ("image 0" if image.WhichOneof("source") == "encoded" else "shape") in details, details
    live.healthy()


def test_absurd_dims_around_a_zero_in_masks_and_maps_are_invalid_argument(live: Live) -> None:
    """The other tensor fields: a region mask, and a map the client sends for Evaluate."""
    empty = empty_tensor([1 << 62, 0])
    image = pb.Image(encoded=SAMPLE_PNG)
    requests = {
        "region mask": pb.EvaluateRequest(
            model_name=DEMO,
            images=[image],
            explainers=[pb.Explainer(method="saliency")],
            regions=[pb.Region(mask=empty)],
        ),
        "explainer map": pb.EvaluateRequest(
            model_name=DEMO, images=[image], explainers=[pb.Explainer(method="saliency", attributions=[empty])]
        ),
    }
    for field, request in requests.items():
        since = len(live.server.output)
        code, details = outcome(functools.partial(live.stub.Evaluate, request, timeout=CALL_SECONDS))
        assert code is grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {code.name} {details}\n{live.last_error(since)}"
        live.healthy()


# ---- every parameter of every method and metric, with each extreme value ---------------------------------------------
# The fuzz above draws a few of these; this sweep tries them all, so a parameter without bounds cannot hide.

EXTREME_PARAMETERS = {
    "1e308": pb.Parameter(number=1e308),
    "-1e308": pb.Parameter(number=-1e308),
    "nan": pb.Parameter(number=math.nan),
    "int64-min": pb.Parameter(integer=-(2**63)),
    "2^62": pb.Parameter(integer=2**62),
    "-1": pb.Parameter(integer=-1),
    "0": pb.Parameter(integer=0),
    "pair-of-1e308": pb.Parameter(numbers=pb.NumberList(values=[1e308, 1e308])),
}
# A refusal takes milliseconds; a call still running after this long is a parameter the server does not bound.
SWEEP_CALL_SECONDS = 5.0


def sweep(live: Live, request_with: Callable[[pb.Parameter], object]) -> None:
    """Each extreme value in turn; every improper status is collected, so one run lists them all."""
    since = len(live.server.output)
    improper = []
    for label, value in EXTREME_PARAMETERS.items():
        code, details = outcome(functools.partial(request_with, value))
        if code not in ALLOWED or (code is not grpc.StatusCode.OK and not details.strip()):
            improper.append(f"{label}: {code.name} {details}")
        live.healthy()
    assert not improper, "\n".join(improper) + "\nlast server error:\n" + live.last_error(since)


METHOD_PARAMETER_CASES = [(method, name) for method, names in sorted(METHOD_PARAMETERS.items()) for name in names]
METRIC_PARAMETER_CASES = [(metric, name) for metric, names in sorted(METRIC_PARAMETERS.items()) for name in names]


@pytest.mark.parametrize(("method", "name"), METHOD_PARAMETER_CASES, ids=[".".join(c) for c in METHOD_PARAMETER_CASES])
def test_extreme_method_parameters_get_a_proper_status(live: Live, method: str, name: str) -> None:
    image = pb.Image(encoded=SAMPLE_PNG)
    sweep(
        live,
        lambda value: live.stub.Explain(
            pb.ExplainRequest(model_name=DEMO, images=[image], method=method, parameters={name: value}),
            timeout=SWEEP_CALL_SECONDS,
        ),
    )


@pytest.mark.parametrize(("metric", "name"), METRIC_PARAMETER_CASES, ids=[".".join(c) for c in METRIC_PARAMETER_CASES])
def test_extreme_metric_parameters_get_a_proper_status(live: Live, metric: str, name: str) -> None:
    image = pb.Image(encoded=SAMPLE_PNG)
    sweep(
        live,
        lambda value: live.stub.Evaluate(
            pb.EvaluateRequest(
                model_name=DEMO,
                images=[image],
                explainers=[pb.Explainer(method="saliency")],
                metrics=[metric],
                parameters={name: value},
                regions=[VALID_BOX],
            ),
            timeout=SWEEP_CALL_SECONDS,
        ),
    )


# ---- models whose file is random bytes or a damaged real model ------------------------------------------------------

REAL_MODEL = (REPOSITORY / DEMO / "1" / "model.onnx").read_bytes()
BROKEN_MODELS = {
    "noise": random.Random(0).randbytes(4096),
    "truncated": REAL_MODEL[: len(REAL_MODEL) // 2],
    "empty": b"",
}
# The registry's answer to a LoadModel whose file does not load, whether or not a session was loaded before.
LOAD_REFUSED = grpc.StatusCode.FAILED_PRECONDITION


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory, healthy: Callable[[RunningServer], None]) -> Iterator[Live]:
    """The demo model next to copies of it whose model.onnx is broken; the fuzz below rewrites "fuzzed"."""
    root = tmp_path_factory.mktemp("broken")
    shutil.copytree(REPOSITORY / DEMO, root / DEMO)
    for name, data in {**BROKEN_MODELS, "fuzzed": b"not yet"}.items():
        shutil.copytree(REPOSITORY / DEMO, root / name)
        (root / name / "1" / "model.onnx").write_bytes(data)
    with live_server(root, healthy) as running:
        yield running


@pytest.mark.parametrize("name", sorted(BROKEN_MODELS))
def test_a_broken_model_file_is_unavailable_with_a_reason_and_the_demo_keeps_serving(broken: Live, name: str) -> None:
    stub = broken.stub
    statuses = {status.name: status for status in stub.ListModels(pb.ListModelsRequest()).models}
    assert statuses[name].state == model_pb2.MODEL_STATE_UNAVAILABLE
    reason = statuses[name].reason
    assert reason
    assert statuses[DEMO].state == model_pb2.MODEL_STATE_READY
    metadata = stub.GetModelMetadata(pb.GetModelMetadataRequest(model_name=name)).metadata
    assert (metadata.state, metadata.reason) == (model_pb2.MODEL_STATE_UNAVAILABLE, reason)

    code, details = outcome(lambda: stub.LoadModel(pb.LoadModelRequest(model_name=name), timeout=CALL_SECONDS))
    assert code is LOAD_REFUSED, f"{code.name}: {details}"
    assert repr(name) in details and reason in details, details
    predict = pb.PredictRequest(model_name=name, images=[pb.Image(encoded=SAMPLE_PNG)])
    code, details = outcome(lambda: stub.Predict(predict, timeout=CALL_SECONDS))
    assert code is grpc.StatusCode.UNAVAILABLE and reason in details, f"{code.name}: {details}"
    broken.healthy()


def with_byte_changed(position: int, mask: int) -> bytes:
    return REAL_MODEL[:position] + bytes([REAL_MODEL[position] ^ mask]) + REAL_MODEL[position + 1 :]


@settings(FUZZ, max_examples=20)
@given(
    data=st.one_of(
        st.binary(max_size=2048),
        st.integers(0, len(REAL_MODEL)).map(lambda cut: REAL_MODEL[:cut]),
        st.builds(with_byte_changed, st.integers(0, len(REAL_MODEL) - 1), st.integers(1, 255)),
    )
)
def test_loading_fuzzed_model_bytes_gets_a_proper_status(broken: Live, data: bytes) -> None:
    """Random bytes, a real model cut anywhere, or one byte of it changed: loading is refused naming the model, or
    succeeds, and then the model answers Predict with a proper status too."""
    (broken.repository / "fuzzed" / "1" / "model.onnx").write_bytes(data)
    since = len(broken.server.output)
    code, details = outcome(
        lambda: broken.stub.LoadModel(pb.LoadModelRequest(model_name="fuzzed"), timeout=CALL_SECONDS)
    )
    assert code in {LOAD_REFUSED, grpc.StatusCode.OK}, f"{code.name}: {details}\n{broken.last_error(since)}"
    if code is grpc.StatusCode.OK:
        predict = pb.PredictRequest(model_name="fuzzed", images=[pb.Image(encoded=SAMPLE_PNG)])
        assert_proper_status(broken, predict, lambda: broken.stub.Predict(predict, timeout=CALL_SECONDS))
    else:
        assert "'fuzzed'" in details, details
    broken.stub.UnloadModel(pb.UnloadModelRequest(model_name="fuzzed"), timeout=CALL_SECONDS)
    broken.healthy()
