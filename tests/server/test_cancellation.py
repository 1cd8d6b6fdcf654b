"""A cancelled or expired call stops its work: the server goes idle instead of finishing the batches."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
from support.models import SmallCNN, export, write_model
from support.processes import busy_fraction
from support.servers import start_server

from onnxplain.client import Client, OnnxplainError, PartialMap

SIDE = 160


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("repository")
    write_model(repository, "cnn", export(SmallCNN(), (1, 3, SIDE, SIDE)))
    running = start_server(repository)
    yield running
    running.stop()


def test_deadline_stops_a_long_explanation(server) -> None:
    image = np.random.default_rng(0).random((3, SIDE, SIDE), dtype=np.float32)
    with Client(server.target) as client:
        started = time.monotonic()
        # 160 * 160 windows of one pixel: minutes of work if it were not stopped.
        with pytest.raises(OnnxplainError) as caught:
            client.explain("cnn", image, method="occlusion", window=1, stride=1, timeout=1.0)
        assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 5
        time.sleep(0.5)
        assert busy_fraction(server.process.pid) < 0.2, "the server kept computing after the deadline"
        # And it still serves.
        assert client.predict("cnn", image).scores.shape == (5,)


def test_a_stream_past_its_deadline_still_delivers_partial_maps(server) -> None:
    image = np.random.default_rng(1).random((3, SIDE, SIDE), dtype=np.float32)
    received = []
    with Client(server.target) as client, pytest.raises(OnnxplainError) as caught:
        for event in client.explain_stream("cnn", image, method="occlusion", window=1, stride=1, timeout=2.0):
            received.append(event)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    partials = [event for event in received if isinstance(event, PartialMap)]
    assert partials, "partial maps are streamed before the deadline"
    assert partials[-1].attribution.shape == (SIDE, SIDE)
    assert np.abs(partials[-1].attribution).sum() > 0


def test_cancelling_a_rise_stream_stops_the_work_within_a_second(server) -> None:
    image = np.random.default_rng(2).random((3, SIDE, SIDE), dtype=np.float32)
    with Client(server.target) as client:
        events = client.explain_stream("cnn", image, method="rise", num_masks=50_000, timeout=120)
        first = next(iter(events))
        assert first.passes_total == 50_000
        events.close()  # the client cancels the call
        time.sleep(1.0)
        assert busy_fraction(server.process.pid) < 0.2, "the server kept computing after the cancel"
        assert client.predict("cnn", image).scores.shape == (5,)
