"""Streams with back-pressure: a reader that keeps up gets every partial map; a reader that stops gets, when it comes
back, at most the few messages under way plus the newest partial map (older ones were replaced while it was away),
then the final result intact, or the error the work ended with.

A test method reports the partial maps; it is paced by the reader's events while the reader keeps up, then reports
many maps at once while the reader is away. The client channel keeps HTTP/2's stream window at its initial 64 KB (no
BDP growth) and each map is 1 MB, so the transport holds at most the one message it is writing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import grpc
import numpy as np
import pytest
from support.inprocess import registered, serving_in_process
from support.models import SmallCNN, export, write_model

from onnxplain.client.images import to_image
from onnxplain.server.errors import InvalidInput
from onnxplain.server.methods.base import Attribution, AttributionMethod, ExplainJob, Family, Progress
from onnxplain.v1 import explain_service_pb2 as pb
from onnxplain.v1.explain_service_pb2_grpc import ExplainServiceStub

SIDE = 512  # one float32 map: 1 MB
IMAGE = np.random.default_rng(0).random((3, SIDE, SIDE), dtype=np.float32)
PACED = 3  # partial maps reported one at a time, each after the reader has read the previous one
REPORTED = 200  # partial maps in all
FINAL = -1.0
PATIENCE_S = 60
# Under way when the reader stops: the message being written, the event the stream holds, the newest one pending.
MOST_PARTIALS_AFTER_A_PAUSE = 3


class PartialsMethod(AttributionMethod):
    """Reports partial map i as a map full of i; the first PACED wait for the reader, the rest come at once. Then
    it waits for the test's gate and returns a map full of FINAL, or fails."""

    name: ClassVar[str] = "test_partials"
    family: ClassVar[Family] = "perturbation"
    description: ClassVar[str] = "partial maps under the test's control"

    def __init__(self) -> None:
        self.read = [threading.Event() for _ in range(PACED + 1)]
        self.all_reported = threading.Event()
        self.gate = threading.Event()
        self.fail = False

    def forward_passes(self, job: ExplainJob, params: Mapping[str, Any]) -> int:
        return 0

    def attribute(self, job: ExplainJob, params: dict[str, Any]) -> Attribution:
        shape = (len(job.scorer.targets), *job.spatial_size)
        for index in range(1, REPORTED + 1):
            job.progress(Progress(index, REPORTED + 1, np.full(shape, index, dtype=np.float32)))
            if index <= PACED:
                assert self.read[index].wait(PATIENCE_S), "the reader did not read the partial map"
        self.all_reported.set()
        while not self.gate.wait(0.01):
            job.scorer.token.raise_if_cancelled()
        if self.fail:
            raise InvalidInput("the test's method failed after its partial maps")
        return Attribution(np.full(shape, FINAL, dtype=np.float32))


@pytest.fixture
def method() -> Iterator[PartialsMethod]:
    partials = PartialsMethod()
    with registered(partials):
        try:
            yield partials
        finally:
            partials.gate.set()


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[ExplainServiceStub]:
    write_model(tmp_path, "cnn", export(SmallCNN(), (1, *IMAGE.shape)))
    options = [("grpc.http2.bdp_probe", 0)]
    with serving_in_process(tmp_path) as server, grpc.insecure_channel(server.target, options=options) as channel:
        yield ExplainServiceStub(channel)


def partial_value(event: pb.ExplainStreamResponse) -> float:
    values = np.frombuffer(event.partial.attribution.attribution.data, np.float32)
    assert values.size == SIDE * SIDE and np.all(values == values[0])
    return float(values[0])


def read_paced_then_pause(stub: ExplainServiceStub, method: PartialsMethod) -> Iterator[pb.ExplainStreamResponse]:
    """Read every event while the method is paced, then stop reading until it has reported all its maps and the
    test has opened its gate; returns the rest of the stream."""
    request = pb.ExplainRequest(model_name="cnn", images=[to_image(IMAGE)], method=PartialsMethod.name)
    events = stub.ExplainStream(pb.ExplainStreamRequest(request=request), timeout=PATIENCE_S)
    for expected in range(1, PACED + 1):
        event = next(events)
        assert event.WhichOneof("event") == "progress" and event.progress.passes_done == expected
        event = next(events)
        assert partial_value(event) == expected, "a reader that keeps up gets every partial map"
        method.read[expected].set()
    assert method.all_reported.wait(PATIENCE_S)
    method.gate.set()
    return events


def test_a_slow_reader_gets_the_newest_partial_map_and_then_the_final_result(stub, method) -> None:
    rest = list(read_paced_then_pause(stub, method))

    kinds = [event.WhichOneof("event") for event in rest]
    assert kinds[-1] == "result" and "result" not in kinds[:-1]
    partials = [partial_value(event) for event in rest if event.HasField("partial")]
    assert 1 <= len(partials) <= MOST_PARTIALS_AFTER_A_PAUSE, partials
    assert partials == sorted(partials) and partials[-1] == REPORTED, "the newest partial map is the one kept"
    explanation = rest[-1].result.explanations[0]
    final = np.frombuffer(explanation.attributions[0].attribution.data, np.float32)
    assert final.size == SIDE * SIDE and np.all(final == FINAL)


def test_an_error_after_many_partial_maps_reaches_the_slow_reader(stub, method) -> None:
    method.fail = True
    rest = read_paced_then_pause(stub, method)
    received = []
    with pytest.raises(grpc.RpcError) as failed:
        received.extend(rest)
    assert failed.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "failed after its partial maps" in failed.value.details()
    partials = [partial_value(event) for event in received if event.HasField("partial")]
    assert 1 <= len(partials) <= MOST_PARTIALS_AFTER_A_PAUSE and partials[-1] == REPORTED, partials
