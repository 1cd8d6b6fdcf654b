"""What every reliability test ends with: the server process is alive, reports SERVING and answers a normal Predict."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.servers import RunningServer

from onnxplain.server.demo import SAMPLES
from onnxplain.v1 import explain_service_pb2 as pb
from onnxplain.v1.explain_service_pb2_grpc import ExplainServiceStub

# The demo model ("digits") reads this sample as a three.
SAMPLE_PNG = (SAMPLES / "digit_3_clean.png").read_bytes()
HEALTHY_CALL_SECONDS = 20.0


def normal_predict() -> pb.PredictRequest:
    return pb.PredictRequest(model_name="digits", images=[pb.Image(encoded=SAMPLE_PNG)])


def assert_healthy(server: RunningServer) -> None:
    """Alive, SERVING, and a normal Predict of the demo sample still says three."""
    assert server.process.poll() is None, "the server died:\n" + "".join(server.output[-60:])
    with grpc.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=HEALTHY_CALL_SECONDS
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        response = ExplainServiceStub(channel).Predict(normal_predict(), timeout=HEALTHY_CALL_SECONDS)
    assert response.predictions[0].top[0].label == "three"


@pytest.fixture(scope="session")
def healthy() -> Callable[[RunningServer], None]:
    return assert_healthy
