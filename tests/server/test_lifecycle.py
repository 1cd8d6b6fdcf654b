"""Lifecycle: SIGTERM turns health NOT_SERVING at once, refuses new calls and lets calls in flight finish; a reload
swaps the model while a call in flight finishes on the old session.

A call is known to be in flight from the server's own /metrics, never assumed after a pause: on a busy machine a
call can take seconds to arrive.
"""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.models import SmallCNN, export, write_model
from support.scrape import in_flight
from support.servers import free_port, start_server
from support.waiting import wait_until

from onnxplain.client import Client, OnnxplainError
from onnxplain.server.demo import REPOSITORY, SAMPLES

DIGIT = SAMPLES / "digit_3_clean.png"
# About 3 s of RISE on the demo model on an idle machine: long enough to be in flight across a signal or a reload.
LONG_RISE = {"method": "rise", "num_masks": 40000}
# Far longer than the call above takes even on a busy machine, so that only a server waiting out the whole grace,
# instead of stopping once its calls are done, reaches the ceiling below.
SHUTDOWN_GRACE_S = 300
EXIT_CEILING_S = 200


def health_status(target: str) -> str:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
        except grpc.RpcError as error:
            return error.code().name
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def test_sigterm_drains_calls_in_flight_and_refuses_new_ones() -> None:
    metrics_port = free_port()
    server = start_server(REPOSITORY, "--shutdown-grace-s", str(SHUTDOWN_GRACE_S), "--metrics-port", str(metrics_port))
    assert health_status(server.target) == "SERVING"
    client = Client(server.target, timeout=EXIT_CEILING_S)
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(client.explain, "digits", DIGIT, **LONG_RISE)
        wait_until(lambda: in_flight(metrics_port, "digits") == 1 or call.done(), what="the explanation in flight")
        assert not call.done(), "the explanation ended before the signal"
        server.process.send_signal(signal.SIGTERM)
        wait_until(lambda: health_status(server.target) != "SERVING", what="health no longer SERVING")
        with pytest.raises(OnnxplainError) as refused, Client(server.target, timeout=60) as late:
            late.predict("digits", DIGIT)
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE
        explanation = call.result(EXIT_CEILING_S)  # finished, not cut off
    client.close()
    assert explanation.attribution.shape == (28, 28) and explanation.cost.forward_passes == 40000 + 1
    # Exits once its call is done, long before the grace is over.
    assert server.process.wait(EXIT_CEILING_S) == 0


def test_a_reload_mid_call_lets_the_call_finish_on_the_old_weights(tmp_path: Path) -> None:
    shape = (1, 3, 16, 16)
    old, new = SmallCNN(seed=0), SmallCNN(seed=1)
    model_file = write_model(tmp_path, "cnn", export(old, shape))
    image = np.random.default_rng(0).random(shape[1:], dtype=np.float32)
    metrics_port = free_port()
    server = start_server(tmp_path, "--metrics-port", str(metrics_port))
    try:
        with Client(server.target, timeout=300) as client:
            params = {"method": "rise", "num_masks": 60000}
            before = client.explain("cnn", image, **params).attribution
            old_scores = client.predict("cnn", image).scores
            with ThreadPoolExecutor(1) as pool:
                call = pool.submit(client.explain, "cnn", image, **params)
                wait_until(lambda: in_flight(metrics_port, "cnn") == 1 or call.done(), what="the explanation in flight")
                model_file.write_bytes(export(new, shape))
                client.reload("cnn")
                assert not call.done(), "the call should still be running across the reload"
                reloaded_scores = client.predict("cnn", image).scores
                during = call.result(300)
            assert not np.allclose(reloaded_scores, old_scores)
            np.testing.assert_allclose(during.attribution, before, rtol=1e-5, atol=1e-6)
    finally:
        assert server.stop() == 0
