"""The client channel's balancing and retry settings: what the service config says, and what gRPC does with it.

The behaviour tests run a real grpc server in process whose calls fail UNAVAILABLE a set number of times, and count
the attempts that reached it: retried calls arrive again, the others exactly once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from onnxplain.client import Client, OnnxplainError
from onnxplain.client.channel import (
    MAX_MESSAGE_BYTES,
    RETRIED_METHODS,
    RETRY_POLICY,
    SERVICE_NAME,
    channel_options,
    service_config,
)
from onnxplain.v1 import explain_service_pb2 as pb
from onnxplain.v1 import explain_service_pb2_grpc as pb_grpc
from onnxplain.v1 import model_pb2

SERVICE = pb.DESCRIPTOR.services_by_name["ExplainService"]
ADMIN_METHODS = {"LoadModel", "UnloadModel", "ReloadModel"}


class FlakyService(pb_grpc.ExplainServiceServicer):
    """ListModels and LoadModel fail UNAVAILABLE `failures` times, then answer; every attempt is counted."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts: dict[str, int] = {"ListModels": 0, "LoadModel": 0}

    def _attempt(self, rpc: str, context: grpc.ServicerContext) -> None:
        self.attempts[rpc] += 1
        if self.attempts[rpc] <= self.failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, "replica going away")

    def ListModels(self, request, context):
        self._attempt("ListModels", context)
        return pb.ListModelsResponse(models=[model_pb2.ModelStatus(name="m", version="1")])

    def LoadModel(self, request, context):
        self._attempt("LoadModel", context)
        return pb.LoadModelResponse(status=model_pb2.ModelStatus(name="m", version="1"))


@pytest.fixture
def flaky() -> Iterator[tuple[FlakyService, str]]:
    service = FlakyService(failures=2)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_ExplainServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield service, f"127.0.0.1:{port}"
    server.stop(None)


def test_service_name_is_the_one_in_the_proto():
    assert SERVICE.full_name == SERVICE_NAME


def test_every_rpc_is_decided_retried_or_not():
    """Retried: the unary calls that change nothing. Not: the stream (it cannot resume halfway) and the admin calls
    (a second LoadModel may act twice). A new RPC fails here until someone decides."""
    streaming = {method.name for method in SERVICE.methods if method.server_streaming or method.client_streaming}
    assert streaming == {"ExplainStream"}
    assert set(RETRIED_METHODS) == {method.name for method in SERVICE.methods} - streaming - ADMIN_METHODS


def test_default_config_balances_round_robin_and_retries_unavailable_with_backoff():
    config = service_config()
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    [method_config] = config["methodConfig"]
    assert method_config["name"] == [{"service": SERVICE_NAME, "method": method} for method in RETRIED_METHODS]
    assert method_config["retryPolicy"] == {
        "maxAttempts": 5,
        "initialBackoff": "0.1s",
        "maxBackoff": "2s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }


def test_channel_options_carry_the_config_and_let_the_caller_override():
    options = dict(channel_options())
    assert json.loads(options["grpc.service_config"]) == service_config()
    assert options["grpc.enable_retries"] == 1
    # A retried call must still hold its request: gRPC's 256 KiB default would exclude most images.
    assert options["grpc.per_rpc_retry_buffer_size"] == MAX_MESSAGE_BYTES
    assert options["grpc.max_receive_message_length"] == MAX_MESSAGE_BYTES

    plain = dict(channel_options(load_balancing="pick_first", retries=False))
    assert json.loads(plain["grpc.service_config"]) == {"loadBalancingConfig": [{"pick_first": {}}]}
    assert "grpc.enable_retries" not in plain

    mine = json.dumps({"loadBalancingConfig": [{"pick_first": {}}]})
    assert dict(channel_options({"grpc.service_config": mine}))["grpc.service_config"] == mine


def test_an_unknown_balancing_policy_is_refused_before_any_call():
    with pytest.raises(ValueError, match="round_robin, pick_first"):
        channel_options(load_balancing="random")


def test_idempotent_calls_are_retried_until_a_server_answers(flaky):
    service, target = flaky
    with Client(target, timeout=60) as client:
        assert [status.name for status in client.models()] == ["m"]
    assert service.attempts["ListModels"] == 3


def test_retries_stop_at_max_attempts(flaky):
    service, target = flaky
    service.failures = 100
    with Client(target, timeout=60) as client, pytest.raises(OnnxplainError) as raised:
        client.models()
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert service.attempts["ListModels"] == RETRY_POLICY["maxAttempts"]


def test_admin_calls_are_never_retried(flaky):
    service, target = flaky
    with Client(target, timeout=60) as client, pytest.raises(OnnxplainError) as raised:
        client.load("m")
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert service.attempts["LoadModel"] == 1


def test_retries_can_be_turned_off(flaky):
    service, target = flaky
    with Client(target, timeout=60, retries=False) as client, pytest.raises(OnnxplainError) as raised:
        client.models()
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert service.attempts["ListModels"] == 1
