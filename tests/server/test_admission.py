"""Admission before work: a long explanation waits for its turns on the event loop, holding no worker thread, so a
burst of long explanations on one model never keeps a Predict (on any model) from being served; beyond the waiting
bound a call is refused at once with RESOURCE_EXHAUSTED; long work never holds more than half the worker threads.

The long explanations are a test method whose work blocks until the test opens its gate: what is pending, running
or served is decided by events, never by how long anything takes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import grpc
import numpy as np
import pytest
from support.inprocess import InProcessServer, registered, serving_in_process
from support.models import SmallCNN, export, write_model
from support.waiting import wait_until

from onnxplain.client import Client
from onnxplain.client.images import to_image
from onnxplain.server.engine.admission import Turns
from onnxplain.server.errors import ResourceExhausted
from onnxplain.server.methods.base import Attribution, AttributionMethod, ExplainJob, Family
from onnxplain.v1 import explain_service_pb2 as pb
from onnxplain.v1.explain_service_pb2_grpc import ExplainServiceStub

SHAPE = (3, 16, 16)
IMAGE = np.random.default_rng(0).random(SHAPE, dtype=np.float32)
# Generous: a bound on how long a failing test takes, never a latency the test asserts.
PATIENCE_S = 60


class GatedMethod(AttributionMethod):
    """An explanation of many passes whose work waits for the test's gate (looking at its call's token meanwhile,
    as real methods do between batches)."""

    name: ClassVar[str] = "test_gated"
    family: ClassVar[Family] = "perturbation"
    description: ClassVar[str] = "blocks until the test opens the gate"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = 0
        self._lock = threading.Lock()

    def forward_passes(self, job: ExplainJob, params: Mapping[str, Any]) -> int:
        return 0

    def attribute(self, job: ExplainJob, params: dict[str, Any]) -> Attribution:
        with self._lock:
            self.started += 1
        while not self.gate.wait(0.01):
            job.scorer.token.raise_if_cancelled()
        return Attribution(np.ones((len(job.scorer.targets), *job.spatial_size), dtype=np.float32))


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    for index, name in enumerate(("a", "b", "c")):
        write_model(tmp_path, name, export(SmallCNN(seed=index), (1, *SHAPE)))
    return tmp_path


@pytest.fixture
def gated() -> Iterator[GatedMethod]:
    method = GatedMethod()
    with registered(method):
        try:
            yield method
        finally:
            method.gate.set()  # nothing stays blocked, whatever the test's outcome


@pytest.fixture
def served(repository: Path, request: pytest.FixtureRequest) -> Iterator[tuple[InProcessServer, ExplainServiceStub]]:
    settings = getattr(request, "param", {})
    with serving_in_process(repository, **settings) as server, grpc.insecure_channel(server.target) as channel:
        yield server, ExplainServiceStub(channel)


def start_explanations(stub: ExplainServiceStub, model: str, count: int) -> list[grpc.Future]:
    """Long explanations in flight, without a client thread each."""
    request = pb.ExplainRequest(model_name=model, images=[to_image(IMAGE)], method=GatedMethod.name)
    return [stub.Explain.future(request, timeout=PATIENCE_S) for _ in range(count)]


def predict(server: InProcessServer, model: str) -> np.ndarray:
    with Client(server.target, timeout=PATIENCE_S) as client:
        return client.predict(model, IMAGE).scores


def test_forty_long_explanations_on_one_model_never_keep_predict_from_being_served(served, gated) -> None:
    """Defaults: 32 workers, 2 explanations per model at once, 64 waiting. Before admission moved in front of the
    worker threads, 40 such calls held all 32 threads and a Predict on any model waited for the first to end."""
    server, stub = served
    assert server.settings.workers == 32
    slots = server.registry.get("a").explanations
    pending = start_explanations(stub, "a", 40)
    wait_until(lambda: slots.holders == 2 and slots.waiting == 38, what="2 explanations running and 38 waiting")
    wait_until(lambda: gated.started == 2, what="the running explanations started their work")

    assert predict(server, "b").shape == (5,)
    assert predict(server, "a").shape == (5,)
    with Client(server.target, timeout=PATIENCE_S) as client:
        assert client.explain("b", IMAGE, method="saliency").attribution.shape == SHAPE[1:]
    assert not any(future.done() for future in pending), "the long explanations are all still pending"
    assert gated.started == 2

    gated.gate.set()
    results = [future.result() for future in pending]
    assert gated.started == 40
    maps = [result.explanations[0].attributions[0].attribution for result in results]
    assert all(np.all(np.frombuffer(tensor.data, np.float32) == 1) for tensor in maps)


@pytest.mark.parametrize("served", [{"max_concurrent_explanations": 2, "max_waiting_explanations": 3}], indirect=True)
def test_beyond_the_waiting_bound_a_call_is_refused_at_once_and_a_cancelled_waiter_frees_its_place(
    served, gated
) -> None:
    server, stub = served
    slots = server.registry.get("a").explanations
    running = start_explanations(stub, "a", 2)
    wait_until(lambda: gated.started == 2, what="2 explanations running")
    waiting = start_explanations(stub, "a", 3)
    wait_until(lambda: slots.holders == 2 and slots.waiting == 3, what="2 explanations running and 3 waiting")

    [refused] = start_explanations(stub, "a", 1)
    assert refused.exception().code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "model a is computing 2 explanations with 3 waiting" in refused.details()
    assert "try again later" in refused.details()

    # A waiting call whose client gives up leaves the line: the next call takes its place.
    waiting.pop().cancel()
    wait_until(lambda: slots.waiting == 2, what="the cancelled call left the line")
    waiting += start_explanations(stub, "a", 1)
    wait_until(lambda: slots.waiting == 3, what="the next call waits in its place")
    assert gated.started == 2

    gated.gate.set()
    for future in [*running, *waiting]:
        assert future.result().explanations[0].attributions[0].attribution.shape == list(SHAPE[1:])
    assert gated.started == 5
    assert (slots.holders, slots.waiting) == (0, 0)


@pytest.mark.parametrize("served", [{"workers": 4}], indirect=True)
def test_long_work_holds_at_most_half_the_worker_threads(served, gated) -> None:
    """4 workers: two long explanations run (on model a), a third (on model b, whose own turns are free) waits for
    the server's long-work turn holding no thread, and the two remaining threads serve predictions."""
    server, stub = served
    running = start_explanations(stub, "a", 2)
    wait_until(lambda: gated.started == 2, what="two long explanations running")
    b_slots = server.registry.get("b").explanations
    waiting = start_explanations(stub, "b", 1)
    wait_until(lambda: b_slots.holders == 1, what="the explanation on b took its model's turn")

    assert predict(server, "c").shape == (5,)
    assert predict(server, "b").shape == (5,)
    assert gated.started == 2, "the third long explanation waits for a long-work turn"

    gated.gate.set()
    for future in [*running, *waiting]:
        future.result()
    assert gated.started == 3


# ---- the turns themselves --------------------------------------------------------------------------------------------


def test_turns_are_handed_over_in_arrival_order_and_refused_beyond_the_waiting_bound() -> None:
    async def scenario() -> list[int]:
        turns = Turns(limit=1, waiting=2)
        order: list[int] = []
        await turns.take()

        async def waiter(index: int) -> None:
            await turns.take()
            order.append(index)
            turns.give_back()

        tasks = [asyncio.ensure_future(waiter(index)) for index in range(2)]
        await asyncio.sleep(0)
        assert (turns.holders, turns.waiting) == (1, 2)
        with pytest.raises(ResourceExhausted, match="try again later"):
            await turns.take()
        turns.give_back()
        await asyncio.gather(*tasks)
        assert (turns.holders, turns.waiting) == (0, 0)
        return order

    assert asyncio.run(scenario()) == [0, 1]


def test_a_cancelled_waiter_leaves_the_line_and_a_turn_handed_to_it_passes_on() -> None:
    async def scenario() -> None:
        turns = Turns(limit=1, waiting=5)
        await turns.take()
        first = asyncio.ensure_future(turns.take())
        second = asyncio.ensure_future(turns.take())
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.sleep(0)
        assert turns.waiting == 1

        # The turn reaches `second`, which is cancelled before it runs: the turn goes back, nothing leaks.
        turns.give_back()
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        assert (turns.holders, turns.waiting) == (0, 0)
        await turns.take()
        assert turns.holders == 1

        # Cancelled, and passed over by a give_back before it ran: the turn goes to the next in line.
        third, fourth = asyncio.ensure_future(turns.take()), asyncio.ensure_future(turns.take())
        await asyncio.sleep(0)
        third.cancel()
        turns.give_back()
        await fourth
        with pytest.raises(asyncio.CancelledError):
            await third
        assert (turns.holders, turns.waiting) == (1, 0)

    asyncio.run(scenario())
