"""Metrics and request logs of a live server: what /metrics and the JSON log lines say matches what the calls did.

The expected values come from the client side: the calls this test made, the status codes it received and the
Cost the responses reported. Every check compares two scrapes, so the tests do not depend on their order.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from support.servers import RunningServer, free_port, start_server
from support.waiting import wait_until
from tritonclient.grpc import service_pb2 as oip_pb
from tritonclient.grpc import service_pb2_grpc as oip_grpc

from onnxplain.server.demo import REPOSITORY, SAMPLES
from onnxplain.server.observability.metrics import method_label
from onnxplain.v1 import explain_service_pb2 as pb
from onnxplain.v1 import explain_service_pb2_grpc as pb_grpc

TOKEN = "s3cret-token-that-must-never-be-logged"
PNG = (SAMPLES / "digit_3_clean.png").read_bytes()
Samples = dict[tuple[str, frozenset], float]


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    port = free_port()
    running = start_server(REPOSITORY, "--metrics-port", str(port), "--log-format", "json")
    running.metrics_port = port
    yield running
    assert running.stop() == 0, "".join(running.output)


@pytest.fixture(scope="module")
def stub(server: RunningServer) -> Iterator[pb_grpc.ExplainServiceStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield pb_grpc.ExplainServiceStub(channel)


def scrape(server: RunningServer) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def in_flight(samples: Samples) -> float:
    return sum(v for (name, _), v in samples.items() if name == "onnxplain_requests_in_flight")


def in_flight_of(samples: Samples, model: str) -> float:
    return value(samples, "onnxplain_requests_in_flight", model=model)


def call_metadata(request_id: str) -> tuple[tuple[str, str], ...]:
    return (("x-request-id", request_id), ("authorization", f"Bearer {TOKEN}"))


def explain_request(method: str, image: bytes = PNG, **integers: int) -> pb.ExplainRequest:
    parameters = {name: pb.Parameter(integer=number) for name, number in integers.items()}
    return pb.ExplainRequest(
        model_name="digits", images=[pb.Image(encoded=image)], method=method, parameters=parameters
    )


def request_logs(server: RunningServer) -> list[dict]:
    """Every JSON log line so far; each one must parse."""
    return [json.loads(line) for line in list(server.output) if line.startswith("{")]


def logged_call(server: RunningServer, request_id: str) -> dict:
    """The call's log line, once the thread reading the server's output has seen it."""

    def lines() -> list[dict]:
        return [r for r in request_logs(server) if r.get("request_id") == request_id and "rpc" in r]

    found = wait_until(lines, what=f"a log line for request {request_id}")
    assert len(found) == 1, found
    return found[0]


def requests_counted(samples: Samples) -> float:
    return sum(v for (name, _), v in samples.items() if name == "onnxplain_requests_total")


def scrape_counting(server: RunningServer, before: Samples, calls: int) -> Samples:
    """The first scrape that counts `calls` more calls than `before`: an aborted call's status reaches the client
    before the server's interceptor has recorded it."""

    def counted() -> Samples | None:
        samples = scrape(server)
        return samples if requests_counted(samples) >= requests_counted(before) + calls else None

    return wait_until(counted, what=f"{calls} more calls counted")


def test_metrics_count_requests_status_codes_and_passes(server, stub) -> None:
    before = scrape(server)
    # What the client waited for its successful calls, by RPC.
    client_seconds: dict[str, float] = {"Predict": 0.0, "Explain": 0.0, "ExplainStream": 0.0, "Evaluate": 0.0}

    def timed(rpc: str, function, *args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            client_seconds[rpc] += time.perf_counter() - started

    images = [pb.Image(encoded=PNG)] * 3
    for _ in range(2):
        timed("Predict", stub.Predict, pb.PredictRequest(model_name="digits", images=images))
    saliency = timed("Explain", stub.Explain, explain_request("saliency"))
    stream = timed(
        "ExplainStream", lambda: list(stub.ExplainStream(pb.ExplainStreamRequest(request=explain_request("occlusion"))))
    )
    occlusion = stream[-1].result
    evaluation = timed(
        "Evaluate",
        stub.Evaluate,
        pb.EvaluateRequest(
            model_name="digits", images=images[:1], explainers=[pb.Explainer(method="saliency")], metrics=["deletion"]
        ),
    )
    with pytest.raises(grpc.RpcError) as bad_image:
        stub.Explain(explain_request("saliency", image=b"not an image"))
    assert bad_image.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as unknown_model:
        stub.Predict(pb.PredictRequest(model_name="no-such-model", images=images))
    assert unknown_model.value.code() == grpc.StatusCode.NOT_FOUND
    after = scrape_counting(server, before, calls=7)

    requests = "onnxplain_requests_total"
    assert grew(before, after, requests, rpc="Predict", model="digits", method="", code="OK") == 2
    assert grew(before, after, requests, rpc="Explain", model="digits", method="saliency", code="OK") == 1
    assert grew(before, after, requests, rpc="Explain", model="digits", method="saliency", code="INVALID_ARGUMENT") == 1
    assert grew(before, after, requests, rpc="ExplainStream", model="digits", method="occlusion", code="OK") == 1
    assert grew(before, after, requests, rpc="Evaluate", model="digits", method="saliency", code="OK") == 1
    # A model the repository does not hold is not a label value: clients cannot create series at will.
    assert grew(before, after, requests, rpc="Predict", model="", method="", code="NOT_FOUND") == 1
    assert not any(("model", "no-such-model") in labels for _, labels in after)

    # Passes equal the Cost the responses reported; a prediction is one forward pass per image.
    forward, backward = "onnxplain_forward_passes_total", "onnxplain_backward_passes_total"
    assert grew(before, after, forward, model="digits", method="") == 6
    assert grew(before, after, forward, model="digits", method="saliency") == (
        saliency.cost.forward_passes + evaluation.cost.forward_passes
    )
    assert grew(before, after, backward, model="digits", method="saliency") == (
        saliency.cost.backward_passes + evaluation.cost.backward_passes
    )
    assert saliency.cost.backward_passes > 0
    assert grew(before, after, forward, model="digits", method="occlusion") == occlusion.cost.forward_passes > 1

    # One latency observation per call. A successful call's is no longer than the client waited for it (a failed
    # call's status reaches the client before the server stops its clock, so its series are left out).
    duration = "onnxplain_request_duration_seconds"
    calls = {("Predict", "digits"): 2, ("Predict", ""): 1, ("Explain", "digits"): 2, ("ExplainStream", "digits"): 1}
    calls[("Evaluate", "digits")] = 1
    for (rpc, model), count in calls.items():
        assert grew(before, after, f"{duration}_count", rpc=rpc, model=model) == count
        assert grew(before, after, f"{duration}_sum", rpc=rpc, model=model) > 0
    for rpc in ("Predict", "ExplainStream", "Evaluate"):
        assert grew(before, after, f"{duration}_sum", rpc=rpc, model="digits") <= client_seconds[rpc]
    # Each computing call waited once for a worker thread.
    worker_waits = sum(
        grew(before, after, "onnxplain_queue_duration_seconds_count", model=m, queue="worker") for m in ("digits", "")
    )
    assert worker_waits == sum(calls.values())
    assert in_flight(after) == 0


def test_open_inference_protocol_calls_count_their_batch_as_forward_passes(server) -> None:
    before = scrape(server)
    request = oip_pb.ModelInferRequest(model_name="digits", raw_input_contents=[bytes(4 * 5 * 28 * 28)])
    request.inputs.add(name="image", datatype="FP32", shape=(5, 1, 28, 28))
    with grpc.insecure_channel(server.target) as channel:
        response = oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    assert list(response.outputs[0].shape) == [5, 10]
    after = scrape_counting(server, before, calls=1)
    labels = {"rpc": "ModelInfer", "model": "digits", "method": ""}
    assert grew(before, after, "onnxplain_requests_total", **labels, code="OK") == 1
    assert grew(before, after, "onnxplain_forward_passes_total", model="digits", method="") == 5


def test_open_inference_protocol_metadata_calls_are_labelled_with_their_model(server) -> None:
    """ModelMetadata and ModelReady name the model `name`, not `model_name`."""
    before = scrape(server)
    with grpc.insecure_channel(server.target) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        stub.ModelMetadata(oip_pb.ModelMetadataRequest(name="digits"), timeout=30)
        stub.ModelReady(oip_pb.ModelReadyRequest(name="digits"), timeout=30)
    after = scrape_counting(server, before, calls=2)
    for rpc in ("ModelMetadata", "ModelReady"):
        assert grew(before, after, "onnxplain_requests_total", rpc=rpc, model="digits", method="", code="OK") == 1


def test_model_state_is_read_from_the_registry(server) -> None:
    samples = scrape(server)
    for state in ("unloaded", "loading", "ready", "unavailable"):
        expected = 1.0 if state == "ready" else 0.0
        assert value(samples, "onnxplain_model_state", model="digits", version="1", state=state) == expected
    assert value(samples, "process_resident_memory_bytes") > 0


def test_in_flight_counts_a_running_stream_and_cancellation_is_recorded(server, stub) -> None:
    before = scrape(server)
    stream = stub.ExplainStream(pb.ExplainStreamRequest(request=explain_request("rise", num_masks=50_000)), timeout=120)
    first = next(stream)
    assert first.progress.passes_total == 50_000
    # Read until the gauge shows the stream alone: a call that ended just before may still be leaving it, and on a
    # loaded machine that takes a while.
    wait_until(lambda: in_flight_of(scrape(server), "digits") == 1, what="the stream alone in flight")
    stream.cancel()
    with pytest.raises(grpc.RpcError) as expired:
        stub.Explain(explain_request("rise", num_masks=50_000), timeout=0.5)
    assert expired.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    def recorded(code: str, rpc: str) -> bool:
        labels = {"rpc": rpc, "model": "digits", "method": "rise", "code": code}
        return grew(before, scrape(server), "onnxplain_requests_total", **labels) == 1

    # What is asserted is that both ends are recorded, not how fast.
    wait_until(lambda: recorded("CANCELLED", "ExplainStream") and recorded("DEADLINE_EXCEEDED", "Explain"))
    wait_until(lambda: in_flight(scrape(server)) == 0, what="no call in flight")


def test_each_call_logs_one_json_line_with_its_id_and_no_token(server, stub) -> None:
    with grpc.insecure_channel(server.target) as channel:
        probe = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), metadata=call_metadata("probe-1")
        )
    assert probe.status == health_pb2.HealthCheckResponse.SERVING
    response, call = stub.Explain.with_call(explain_request("saliency"), metadata=call_metadata("audit-42"))
    assert ("x-request-id", "audit-42") in tuple(call.trailing_metadata())
    with pytest.raises(grpc.RpcError) as refused:
        stub.Explain(explain_request("saliency", image=b"\x89PNG truncated"), metadata=call_metadata("audit-43"))
    _, anonymous = stub.Predict.with_call(pb.PredictRequest(model_name="digits", images=[pb.Image(encoded=PNG)] * 2))
    generated = dict(anonymous.trailing_metadata())["x-request-id"]
    # An id that is not short printable ASCII is replaced, never logged.
    _, odd = stub.Predict.with_call(
        pb.PredictRequest(model_name="digits", images=[pb.Image(encoded=PNG)]), metadata=call_metadata("x" * 500)
    )
    replaced = dict(odd.trailing_metadata())["x-request-id"]

    ok = logged_call(server, "audit-42")
    assert {k: ok[k] for k in ("rpc", "model", "method", "code", "images", "message", "level")} == {
        "rpc": "Explain",
        "model": "digits",
        "method": "saliency",
        "code": "OK",
        "images": 1,
        "message": "",
        "level": "INFO",
    }
    assert (ok["forward_passes"], ok["backward_passes"]) == (
        response.cost.forward_passes,
        response.cost.backward_passes,
    )
    assert ok["duration_ms"] > 0 and ok["peer"].startswith(("ipv4:127.0.0.1:", "ipv6:"))
    assert datetime.fromisoformat(ok["time"]).utcoffset() == timedelta(0)

    failed = logged_call(server, "audit-43")
    assert (failed["code"], failed["message"]) == ("INVALID_ARGUMENT", refused.value.details())
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("x-request-id", "audit-43") in tuple(refused.value.trailing_metadata())

    assert len(generated) == 32 and int(generated, 16) >= 0
    assert logged_call(server, generated)["forward_passes"] == 2
    assert len(replaced) == 32 and logged_call(server, replaced)["rpc"] == "Predict"

    output = "".join(server.output)
    assert TOKEN not in output and "x" * 500 not in output
    # The server's other log records are JSON lines too.
    startup = [r for r in request_logs(server) if r["logger"] == "onnxplain.server" and "digits" in r["message"]]
    assert startup and startup[0]["level"] == "INFO"
    assert not any(r.get("request_id") == "probe-1" for r in request_logs(server)), "health probes are not logged"


def test_calls_refused_by_auth_are_counted_and_logged(tmp_path) -> None:
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(f"caller {TOKEN}\n")
    port = free_port()
    refused = start_server(REPOSITORY, "--metrics-port", str(port), "--tokens-file", str(tokens_file))
    refused.metrics_port = port
    try:
        with grpc.insecure_channel(refused.target) as channel:
            stub = pb_grpc.ExplainServiceStub(channel)
            predict = pb.PredictRequest(model_name="digits", images=[pb.Image(encoded=PNG)])
            with pytest.raises(grpc.RpcError) as anonymous:
                stub.Predict(predict, metadata=(("x-request-id", "no-token"),))
            with pytest.raises(grpc.RpcError) as wrong:
                stub.Predict(predict, metadata=(("x-request-id", "wrong"), ("authorization", "Bearer guess-" + TOKEN)))
            with pytest.raises(grpc.RpcError) as caller:
                stub.LoadModel(pb.LoadModelRequest(model_name="digits"), metadata=call_metadata("caller-load"))
        samples = scrape_counting(refused, {}, calls=3)
        codes = [(anonymous, "no-token", "Predict"), (wrong, "wrong", "Predict"), (caller, "caller-load", "LoadModel")]
        for error, request_id, rpc in codes:
            line = logged_call(refused, request_id)
            # A refused request is never parsed, so it names no model.
            assert (line["rpc"], line["code"], line["model"]) == (rpc, error.value.code().name, "")
        assert [error.value.code() for error, _, _ in codes] == [
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.PERMISSION_DENIED,
        ]
        requests = "onnxplain_requests_total"
        assert value(samples, requests, rpc="Predict", model="", method="", code="UNAUTHENTICATED") == 2
        assert value(samples, requests, rpc="LoadModel", model="", method="", code="PERMISSION_DENIED") == 1
        assert TOKEN not in "".join(refused.output)
    finally:
        assert refused.stop() == 0, "".join(refused.output)


@pytest.mark.parametrize(
    ("methods", "label"),
    [("rise", "rise"), ("rise,no-such-method", "rise"), ("no-such-method", ""), ("rise,occlusion", "several")],
)
def test_the_method_label_takes_a_bounded_set_of_values(methods: str, label: str) -> None:
    # An Evaluate request naming k explainers would otherwise make one series per combination of method names.
    assert method_label(methods) == label


@pytest.mark.parametrize("rpc", ["/onnxplain.v1.ExplainService/Predict", "/inference.GRPCInferenceService/ModelInfer"])
def test_an_undecodable_request_is_invalid_argument_logged_and_counted(server, rpc: str) -> None:
    before = scrape(server)
    with grpc.insecure_channel(server.target) as channel:
        call = channel.unary_unary(rpc, request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw)
        with pytest.raises(grpc.RpcError) as error:
            call(b"\xff\xff\xff\xff\x0f", timeout=60)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid message" in error.value.details()
    after = scrape_counting(server, before, calls=1)
    name = rpc.rsplit("/", 1)[-1]
    labels = {"rpc": name, "model": "", "method": "", "code": "INVALID_ARGUMENT"}
    assert grew(before, after, "onnxplain_requests_total", **labels) == 1
