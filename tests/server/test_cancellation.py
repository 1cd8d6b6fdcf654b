"""A cancelled or expired call stops its work: the server goes idle instead of finishing the batches.

"Stopped" is judged in the server's CPU seconds against a complete run of a known fraction of the same work, so a
busy machine, which stretches every wall-clock time, changes nothing.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from support.models import SmallCNN, export, write_model
from support.processes import cpu_of, cpu_until_idle
from support.servers import start_server

from onnxplain.client import Client, OnnxplainError, PartialMap

SIDE = 160
# Over a quarter of the whole work spent after the cancel means the work went on; the batch running at the cancel
# is a small part of it.
AFTER_CANCEL_SHARE = 0.25


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("repository")
    write_model(repository, "cnn", export(SmallCNN(), (1, 3, SIDE, SIDE)))
    running = start_server(repository)
    yield running
    running.stop()


def assert_stopped(pid: int, whole_job: float) -> None:
    """The server goes idle having spent a small share of `whole_job` (CPU seconds) after the cancel."""
    after = cpu_until_idle(pid)
    assert after < AFTER_CANCEL_SHARE * whole_job, (
        f"the server kept computing: {after:.1f} CPU s after the cancel, the whole job costs about {whole_job:.1f}"
    )


def test_deadline_stops_a_long_explanation(server) -> None:
    image = np.random.default_rng(0).random((3, SIDE, SIDE), dtype=np.float32)
    with Client(server.target, timeout=300) as client:
        # 40 * 40 windows of 4x4 pixels: a sixteenth of the 160 * 160 windows of one pixel below.
        sixteenth = cpu_of(
            server.process.pid, lambda: client.explain("cnn", image, method="occlusion", window=4, stride=4)
        )
        with pytest.raises(OnnxplainError) as caught:
            client.explain("cnn", image, method="occlusion", window=1, stride=1, timeout=1.0)
        assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert_stopped(server.process.pid, 16 * sixteenth)
        # And it still serves.
        assert client.predict("cnn", image).scores.shape == (5,)


def test_a_stream_past_its_deadline_still_delivers_partial_maps(server) -> None:
    """100,000 masks take minutes of CPU on any machine, far past the deadline; the deadline is generous enough for
    partial maps (one every half second) to come first on a busy one."""
    image = np.random.default_rng(1).random((3, SIDE, SIDE), dtype=np.float32)
    received = []
    with Client(server.target) as client, pytest.raises(OnnxplainError) as caught:
        for event in client.explain_stream("cnn", image, method="rise", num_masks=100_000, timeout=10.0):
            received.append(event)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    partials = [event for event in received if isinstance(event, PartialMap)]
    assert partials, "partial maps are streamed before the deadline"
    assert partials[-1].attribution.shape == (SIDE, SIDE)
    assert np.abs(partials[-1].attribution).sum() > 0


def test_cancelling_a_rise_stream_stops_the_work(server) -> None:
    image = np.random.default_rng(2).random((3, SIDE, SIDE), dtype=np.float32)
    with Client(server.target, timeout=300) as client:
        # 1,563 masks: a thirty-second of the 50,000 below.
        part = cpu_of(server.process.pid, lambda: client.explain("cnn", image, method="rise", num_masks=1563))
        events = client.explain_stream("cnn", image, method="rise", num_masks=50_000)
        first = next(iter(events))
        assert first.passes_total == 50_000
        events.close()  # the client cancels the call
        assert_stopped(server.process.pid, 32 * part)
        assert client.predict("cnn", image).scores.shape == (5,)
