"""The Open Inference Protocol (KServe v2) endpoint, driven by the real Triton client from PyPI against a live server.

References are independent of the server: the model file run directly in ONNX Runtime, its graph read with onnx,
and tritonclient's own copy of the protocol. This process never imports onnxplain's OIP stubs: tritonclient
registers the same `inference.*` protobuf names, and one process cannot hold both (the server runs in its own).
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import cv2
import grpc
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_tools import protoc
from support.servers import RunningServer
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from onnxplain.server.demo import REPOSITORY, SAMPLES

ROOT = Path(__file__).resolve().parents[2]
MODEL = "digits"
MODEL_FILE = REPOSITORY / MODEL / "1" / "model.onnx"
OIP_PROTO = "inference/v2/grpc_predict_v2.proto"
SERVICE_METHODS = ["ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer"]
# Added by the OIP after Triton's copy of the protocol: tritonclient skips the field as unknown.
OIP_ONLY = {"inference.ModelMetadataResponse.properties", "inference.ModelMetadataResponse.PropertiesEntry"}


@pytest.fixture(scope="module")
def client(demo_server: RunningServer) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(demo_server.target)
    yield client
    client.close()


@pytest.fixture(scope="module")
def stub(demo_server: RunningServer) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    """tritonclient's generated stub, for requests its high-level client will not build (typed or broken ones)."""
    with grpc.insecure_channel(demo_server.target) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def graph() -> onnx.GraphProto:
    return onnx.load(str(MODEL_FILE)).graph


def reference_scores(batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(MODEL_FILE), providers=["CPUExecutionProvider"])
    (scores,) = session.run(None, {session.get_inputs()[0].name: batch})
    return scores


def digit_batch() -> tuple[np.ndarray, list[int]]:
    """The clean demo samples as the model's own input (area-resized to 28x28, scaled to [0, 1]) and their digits."""
    paths = sorted(SAMPLES.glob("digit_*_clean.png"))
    images = [
        cv2.resize(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), (28, 28), interpolation=cv2.INTER_AREA) for p in paths
    ]
    batch = np.stack(images).astype(np.float32)[:, None] / 255.0
    return batch, [int(p.name.split("_")[1]) for p in paths]


def infer_input(name: str, array: np.ndarray, datatype: str = "FP32") -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def status_of(error: InferenceServerException) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, error.status().removeprefix("StatusCode."))


def test_server_is_live_and_ready(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()


def test_health_and_reflection_cover_the_service(demo_server: RunningServer) -> None:
    """What grpcurl and load balancers see: the service is SERVING and reflection serves its descriptor."""
    service = "inference.GRPCInferenceService"
    with grpc.insecure_channel(demo_server.target) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=service)
        reply = next(
            reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(iter([request]), timeout=10)
        )
    (serialized,) = reply.file_descriptor_response.file_descriptor_proto
    (reflected,) = descriptor_pb2.FileDescriptorProto.FromString(serialized).service
    assert [method.name for method in reflected.method] == SERVICE_METHODS


def test_server_metadata_names_onnxplain_and_its_explain_api(client: triton.InferenceServerClient) -> None:
    metadata = client.get_server_metadata()
    assert metadata.name == "onnxplain"
    assert metadata.version == version("onnxplain-server")
    assert list(metadata.extensions) == ["onnxplain.v1.ExplainService"]


def test_model_metadata_describes_the_graph(client: triton.InferenceServerClient, graph: onnx.GraphProto) -> None:
    metadata = client.get_model_metadata(MODEL)
    (graph_input,), (graph_output,) = graph.input, graph.output
    assert (metadata.name, list(metadata.versions), metadata.platform) == (MODEL, ["1"], "onnxruntime_onnx")
    (described_input,) = metadata.inputs
    assert (described_input.name, described_input.datatype) == (graph_input.name, "FP32")
    # The batch is variable (-1) whatever the export says; the image dimensions are the graph's.
    image_dims = [d.dim_value for d in graph_input.type.tensor_type.shape.dim[1:]]
    assert list(described_input.shape) == [-1, *image_dims] == [-1, 1, 28, 28]
    (described_output,) = metadata.outputs
    assert (described_output.name, described_output.datatype) == (graph_output.name, "FP32")
    assert list(described_output.shape) == [-1, 10]


def test_model_readiness_by_name_and_version(client: triton.InferenceServerClient) -> None:
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, "1")
    for name, model_version in (("no_such_model", ""), (MODEL, "9")):
        with pytest.raises(InferenceServerException) as error:
            client.is_model_ready(name, model_version)
        assert status_of(error.value) == grpc.StatusCode.NOT_FOUND


def test_infer_raw_fp32_batch_matches_onnxruntime(client: triton.InferenceServerClient) -> None:
    digits, labels = digit_batch()
    noise = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    batch = np.concatenate([digits, noise])
    result = client.infer(MODEL, [infer_input("image", batch)], request_id="request-7")
    response = result.get_response()
    assert (response.id, response.model_name, response.model_version) == ("request-7", MODEL, "1")
    (output,) = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("logits", "FP32", [len(batch), 10])
    assert len(response.raw_output_contents) == 1
    scores = result.as_numpy("logits")
    np.testing.assert_allclose(scores, reference_scores(batch), rtol=1e-5, atol=1e-5)
    assert scores[: len(labels)].argmax(axis=1).tolist() == labels


def test_infer_typed_fp32_contents(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    batch = np.random.default_rng(1).random((2, 1, 28, 28), dtype=np.float32)
    request = service_pb2.ModelInferRequest(model_name=MODEL, id="typed")
    request.inputs.add(name="image", datatype="FP32", shape=batch.shape).contents.fp32_contents.extend(batch.ravel())
    response = stub.ModelInfer(request, timeout=30)
    assert response.id == "typed"
    (raw,) = response.raw_output_contents
    scores = np.frombuffer(raw, dtype="<f4").reshape(list(response.outputs[0].shape))
    np.testing.assert_allclose(scores, reference_scores(batch), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("shape", "datatype", "data_bytes", "message"),
    [
        ((1, 1, 27, 28), "FP32", None, "shape"),
        ((1, 28, 28), "FP32", None, "shape"),
        ((1, 1, 28, 28), "FP32", 4 * 784 - 4, "bytes"),
        ((1, 1, 28, 28), "FP64", None, "float32"),
        ((1, 1, 28, 28), "BYTES", None, "datatype"),
        ((1, 1, 28, -28), "FP32", 4 * 784, "negative"),
        ((2**31, 2**31, 28, 28), "FP32", 4 * 784, "bytes"),
        ((65, 1, 28, 28), "FP32", None, "limit"),
        ((0, 1, 28, 28), "FP32", None, "empty"),
        ((0, 2**62, 2**62), "FP32", 0, "empty"),
    ],
)
def test_malformed_tensors_are_invalid_argument(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
    shape: tuple[int, ...],
    datatype: str,
    data_bytes: int | None,
    message: str,
) -> None:
    itemsize = {"FP32": 4, "FP64": 8, "BYTES": 1}[datatype]
    size = data_bytes if data_bytes is not None else int(np.prod(shape)) * itemsize
    request = service_pb2.ModelInferRequest(model_name=MODEL, raw_input_contents=[bytes(size)])
    request.inputs.add(name="image", datatype=datatype, shape=shape)
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(request, timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
    assert message in error.value.details()


def typed_request(datatype: str, field: str, values: list[int]) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    tensor = request.inputs.add(name="image", datatype=datatype, shape=[1, 1, 28, 28])
    getattr(tensor.contents, field).extend(values + [0] * (784 - len(values)))
    return request


@pytest.mark.parametrize(
    ("datatype", "field", "values", "message"),
    [
        (
            "INT8",
            "int_contents",
            [300],
            "is INT8, which holds -128 to 127; its contents.int_contents has values from 0 to 300",
        ),
        ("INT8", "int_contents", [-129, 5], "values from -129 to 5"),
        ("INT16", "int_contents", [40_000], "is INT16, which holds -32768 to 32767"),
        (
            "UINT8",
            "uint_contents",
            [256],
            "is UINT8, which holds 0 to 255; its contents.uint_contents has values from 0 to 256",
        ),
        # -1 sent for UINT8 arrives as 2**32 - 1: uint_contents is uint32 on the wire.
        ("UINT8", "uint_contents", [2**32 - 1], "values from 0 to 4294967295"),
        ("UINT16", "uint_contents", [70_000], "is UINT16, which holds 0 to 65535"),
    ],
)
def test_typed_integers_outside_the_datatype_are_invalid_argument(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, datatype: str, field: str, values: list[int], message: str
) -> None:
    """Refused rather than wrapped (300 as INT8 would run as 44), before the model is looked at."""
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(typed_request(datatype, field, values), timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
    assert "input 'image'" in error.value.details()
    assert message in error.value.details()


@pytest.mark.parametrize(
    ("datatype", "field", "values"),
    [
        ("INT8", "int_contents", [-128, 127]),
        ("INT16", "int_contents", [-32768, 32767]),
        ("UINT8", "uint_contents", [255]),
        ("UINT16", "uint_contents", [65535]),
        ("INT32", "int_contents", [-(2**31), 2**31 - 1]),
        ("UINT32", "uint_contents", [2**32 - 1]),
        ("INT64", "int64_contents", [-(2**63), 2**63 - 1]),
        ("UINT64", "uint64_contents", [2**64 - 1]),
        ("BOOL", "bool_contents", [True, False]),
        ("FP64", "fp64_contents", [1e300, -1e300]),
    ],
)
def test_typed_values_the_datatype_holds_reach_the_model(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, datatype: str, field: str, values: list
) -> None:
    """The datatype's own extremes pass the conversion: what refuses them is the float32 model's input type."""
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(typed_request(datatype, field, values), timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
    assert "input 'image' must be float32" in error.value.details()


def test_wrong_input_or_output_names_are_invalid_argument(client: triton.InferenceServerClient) -> None:
    image = np.zeros((1, 1, 28, 28), np.float32)
    calls = [
        lambda: client.infer(MODEL, [infer_input("pixels", image)]),
        lambda: client.infer(MODEL, [infer_input("image", image)], outputs=[triton.InferRequestedOutput("probs")]),
        lambda: client.infer(MODEL, [infer_input("image", image), infer_input("image", image)]),
    ]
    for call in calls:
        with pytest.raises(InferenceServerException) as error:
            call()
        assert status_of(error.value) == grpc.StatusCode.INVALID_ARGUMENT, error.value.message()


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_invalid_argument(client: triton.InferenceServerClient, value: float) -> None:
    """As ExplainService refuses them in raw tensors: the model would answer NaN scores with status OK."""
    batch = np.zeros((2, 1, 28, 28), np.float32)
    batch[1, 0, 14, 14] = value
    with pytest.raises(InferenceServerException) as error:
        client.infer(MODEL, [infer_input("image", batch)])
    assert status_of(error.value) == grpc.StatusCode.INVALID_ARGUMENT, error.value.message()
    assert "NaN or infinite" in error.value.message()


def test_requested_outputs_are_bounded_and_names_echoed_short(
    client: triton.InferenceServerClient, stub: service_pb2_grpc.GRPCInferenceServiceStub
) -> None:
    output = client.get_model_metadata(MODEL).outputs[0].name
    long_name = "x" * 2**20

    def request(input_name: str, outputs: list[str]) -> service_pb2.ModelInferRequest:
        request = service_pb2.ModelInferRequest(model_name=MODEL, raw_input_contents=[bytes(4 * 784)])
        request.inputs.add(name=input_name, datatype="FP32", shape=[1, 1, 28, 28])
        for name in outputs:
            request.outputs.add(name=name)
        return request

    assert stub.ModelInfer(request("image", [output]), timeout=30).outputs[0].name == output
    for bad, fragment in [
        (request("image", [output] * 10_000), "asks for 10000 outputs"),
        (request("image", [long_name]), "has no output 'xxx"),
        (request(long_name, []), "takes one input named 'image', got 1: 'xxx"),
    ]:
        with pytest.raises(grpc.RpcError) as error:
            stub.ModelInfer(bad, timeout=30)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()[:1000]
        assert fragment in error.value.details()
        assert len(error.value.details().encode()) < 1024


def test_unknown_model_is_not_found(client: triton.InferenceServerClient) -> None:
    image = np.zeros((1, 1, 28, 28), np.float32)
    for call in (
        lambda: client.infer("no_such_model", [infer_input("image", image)]),
        lambda: client.get_model_metadata("no_such_model"),
        lambda: client.infer(MODEL, [infer_input("image", image)], model_version="9"),
    ):
        with pytest.raises(InferenceServerException) as error:
            call()
        assert status_of(error.value) == grpc.StatusCode.NOT_FOUND, error.value.message()


def test_proto_is_wire_compatible_with_tritonclient(tmp_path: Path) -> None:
    """Every message and field of our proto has the number, type and label of tritonclient's copy of the protocol,
    and the service the same methods; read from a descriptor set, so our stubs are never imported here."""
    descriptor_set = tmp_path / "oip.pb"
    assert protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"--descriptor_set_out={descriptor_set}", OIP_PROTO]) == 0
    (ours,) = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes()).file
    theirs = descriptor_pb2.FileDescriptorProto()
    service_pb2.DESCRIPTOR.CopyToProto(theirs)
    assert ours.package == theirs.package == "inference"

    their_messages = dict(_messages(theirs.message_type, theirs.package))
    our_messages = dict(_messages(ours.message_type, ours.package))
    assert len(our_messages) == 24
    for name, message in our_messages.items():
        if name in OIP_ONLY:
            continue
        assert name in their_messages, name
        their_fields = {field.number: field for field in their_messages[name].field}
        for field in message.field:
            if f"{name}.{field.name}" in OIP_ONLY:
                assert field.number not in their_fields, f"{name}.{field.name}"
                continue
            assert field.number in their_fields, f"{name}.{field.name}"
            twin = their_fields[field.number]
            assert (field.name, field.type, field.label, field.type_name) == (
                twin.name,
                twin.type,
                twin.label,
                twin.type_name,
            ), f"{name}.{field.name}"

    (service,) = ours.service
    their_methods = {method.name: method for method in theirs.service[0].method}
    assert service.name == theirs.service[0].name == "GRPCInferenceService"
    assert [m.name for m in service.method] == SERVICE_METHODS
    for method in service.method:
        twin = their_methods[method.name]
        assert (method.input_type, method.output_type) == (twin.input_type, twin.output_type)


def _messages(messages, prefix: str) -> Iterator[tuple[str, descriptor_pb2.DescriptorProto]]:
    for message in messages:
        name = f"{prefix}.{message.name}"
        yield name, message
        yield from _messages(message.nested_type, name)
