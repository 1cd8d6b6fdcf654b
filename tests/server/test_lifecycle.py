"""Lifecycle: SIGTERM turns health NOT_SERVING at once, refuses new calls and lets calls in flight finish; a reload
swaps the model while a call in flight finishes on the old session."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.models import SmallCNN, export, write_model
from support.servers import start_server

from onnxplain.client import Client, OnnxplainError
from onnxplain.server.demo import REPOSITORY, SAMPLES

DIGIT = SAMPLES / "digit_3_clean.png"
# About 3 s of RISE on the demo model on this machine: long enough to be in flight across a signal or a reload.
LONG_RISE = {"method": "rise", "num_masks": 40000}


def health_status(target: str) -> str:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
        except grpc.RpcError as error:
            return error.code().name
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_sigterm_drains_calls_in_flight_and_refuses_new_ones() -> None:
    server = start_server(REPOSITORY, "--shutdown-grace-s", "30")
    assert health_status(server.target) == "SERVING"
    client = Client(server.target, timeout=60)
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(client.explain, "digits", DIGIT, **LONG_RISE)
        time.sleep(0.7)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        wait_for(lambda: health_status(server.target) != "SERVING", timeout=2)
        with pytest.raises(OnnxplainError) as refused, Client(server.target, timeout=5) as late:
            late.predict("digits", DIGIT)
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE
        explanation = in_flight.result(60)  # finished, not cut off
    client.close()
    assert explanation.attribution.shape == (28, 28) and explanation.cost.forward_passes == 40000 + 1
    assert server.process.wait(30) == 0
    assert time.monotonic() - signalled < 30


def test_a_reload_mid_call_lets_the_call_finish_on_the_old_weights(tmp_path: Path) -> None:
    shape = (1, 3, 16, 16)
    old, new = SmallCNN(seed=0), SmallCNN(seed=1)
    model_file = write_model(tmp_path, "cnn", export(old, shape))
    image = np.random.default_rng(0).random(shape[1:], dtype=np.float32)
    server = start_server(tmp_path)
    try:
        with Client(server.target, timeout=120) as client:
            params = {"method": "rise", "num_masks": 60000}
            before = client.explain("cnn", image, **params).attribution
            old_scores = client.predict("cnn", image).scores
            with ThreadPoolExecutor(1) as pool:
                in_flight = pool.submit(client.explain, "cnn", image, **params)
                time.sleep(0.3)
                model_file.write_bytes(export(new, shape))
                client.reload("cnn")
                assert not in_flight.done(), "the call should still be running across the reload"
                reloaded_scores = client.predict("cnn", image).scores
                during = in_flight.result(120)
            assert not np.allclose(reloaded_scores, old_scores)
            np.testing.assert_allclose(during.attribution, before, rtol=1e-5, atol=1e-6)
    finally:
        assert server.stop() == 0
