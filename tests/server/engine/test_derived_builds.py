"""Derived-graph builds off the serving path: while one build is held (on an event), cached graphs, other keys and
the main session keep serving; a second request for the graph being built waits for it and gets the same session;
waiting for a build turn or for another request's build ends when the request is cancelled; a failed build's error
reaches the requests that waited for it, and the next request builds again. No step depends on timing: threads wait
on events, and the waits' limits only bound a failing run."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import onnx
import pytest
from support.models import SmallCNN, export

from onnxplain.server.engine.cancel import CancelToken
from onnxplain.server.engine.derived import DerivedGraphs, DerivedMemory, DerivedSession
from onnxplain.server.engine.providers import CPU
from onnxplain.server.engine.session import ModelSession
from onnxplain.server.errors import Cancelled, InvalidInput

SHAPE = (3, 8, 8)
LIMIT_S = 60  # only bounds a failing run


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    return export(SmallCNN(seed=5), (1, *SHAPE))


@pytest.fixture
def graphs(model_bytes) -> DerivedGraphs:
    return DerivedGraphs(onnx.load_from_string(model_bytes), providers=[CPU], threads=1, memory=DerivedMemory(1 << 40))


def doubled(full: onnx.ModelProto) -> onnx.ModelProto:
    """A derived graph: the model's scores, doubled."""
    output = full.graph.output[0].name
    full.graph.node.append(onnx.helper.make_node("Add", [output, output], ["doubled"]))
    full.graph.output.append(onnx.helper.make_tensor_value_info("doubled", onnx.TensorProto.FLOAT, None))
    return full


class HeldBuild:
    """A builder that reports it started and then waits to be released; counts its calls."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, full: onnx.ModelProto) -> onnx.ModelProto:
        self.calls += 1
        self.started.set()
        if not self.release.wait(LIMIT_S):
            raise AssertionError("the held build was never released")
        return doubled(full)


class WatchedToken(CancelToken):
    """A token that tells when its request first looked at it: it is then waiting (for a turn, or a build)."""

    def __init__(self) -> None:
        super().__init__()
        self.looked_at = threading.Event()

    def raise_if_cancelled(self) -> None:
        self.looked_at.set()
        super().raise_if_cancelled()


def never_called(full: onnx.ModelProto) -> onnx.ModelProto:
    raise AssertionError("a request built a graph another request was building")


def in_thread(pool: ThreadPoolExecutor, call: Callable[[], DerivedSession]) -> Future:
    return pool.submit(call)


def test_a_held_build_stalls_nobody_but_the_requests_for_its_graph(graphs, model_bytes, tmp_path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(model_bytes)
    main = ModelSession(path, providers=[CPU], threads=1, input_name="input", output_name="scores", fixed_batch=None)
    cached = graphs.session("cached", doubled)
    held = HeldBuild()
    image = np.random.default_rng(0).random((2, *SHAPE), dtype=np.float32)
    with ThreadPoolExecutor(3) as pool:
        first = in_thread(pool, lambda: graphs.session("held", held))
        assert held.started.wait(LIMIT_S)
        waiting_token = WatchedToken()
        second = in_thread(pool, lambda: graphs.session("held", never_called, waiting_token))
        assert waiting_token.looked_at.wait(LIMIT_S)  # the second request is waiting for the held build
        # Meanwhile: the cached graph, a graph of another key (built now) and the main session all serve.
        assert graphs.session("cached", never_called) is cached
        other = in_thread(pool, lambda: graphs.session("other", doubled)).result(LIMIT_S)
        scores = main.run(image)
        np.testing.assert_allclose(cached.run({"input": image})[1], 2 * scores, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(other.run({"input": image})[1], 2 * scores, rtol=1e-5, atol=1e-6)
        assert not first.done() and not second.done()
        held.release.set()
        built = first.result(LIMIT_S)
        assert second.result(LIMIT_S) is built
    assert held.calls == 1
    assert graphs.builds == 3
    np.testing.assert_allclose(built.run({"input": image})[1], 2 * scores, rtol=1e-5, atol=1e-6)


def test_a_build_waiting_for_its_turn_stops_when_its_request_is_cancelled(model_bytes) -> None:
    memory = DerivedMemory(1 << 40, builds_at_once=1)
    graphs = DerivedGraphs(onnx.load_from_string(model_bytes), providers=[CPU], threads=1, memory=memory)
    held = HeldBuild()
    with ThreadPoolExecutor(2) as pool:
        first = in_thread(pool, lambda: graphs.session("held", held))
        assert held.started.wait(LIMIT_S)
        token = WatchedToken()
        queued = in_thread(pool, lambda: graphs.session("queued", never_called, token))
        assert token.looked_at.wait(LIMIT_S)
        token.cancel()
        with pytest.raises(Cancelled):
            queued.result(LIMIT_S)
        held.release.set()
        first.result(LIMIT_S)
    assert graphs.cached == ["held"]
    # The cancelled request left nothing behind: the key builds on the next request.
    graphs.session("queued", doubled)
    assert graphs.builds == 2


def test_a_request_waiting_for_another_requests_build_stops_when_cancelled(graphs) -> None:
    held = HeldBuild()
    with ThreadPoolExecutor(2) as pool:
        first = in_thread(pool, lambda: graphs.session("held", held))
        assert held.started.wait(LIMIT_S)
        token = WatchedToken()
        waiting = in_thread(pool, lambda: graphs.session("held", never_called, token))
        assert token.looked_at.wait(LIMIT_S)
        token.cancel()
        with pytest.raises(Cancelled):
            waiting.result(LIMIT_S)
        held.release.set()
        assert first.result(LIMIT_S) is graphs.session("held", never_called)
    assert held.calls == 1


def test_a_failed_build_fails_its_waiters_and_the_next_request_builds_again(graphs) -> None:
    held = HeldBuild()

    def refused(full: onnx.ModelProto) -> onnx.ModelProto:
        held(full)
        raise InvalidInput("no layer named 'nope'")

    with ThreadPoolExecutor(2) as pool:
        first = in_thread(pool, lambda: graphs.session("layer", refused))
        assert held.started.wait(LIMIT_S)
        token = WatchedToken()
        waiting = in_thread(pool, lambda: graphs.session("layer", never_called, token))
        assert token.looked_at.wait(LIMIT_S)
        held.release.set()
        for request in (first, waiting):
            with pytest.raises(InvalidInput, match="no layer named 'nope'"):
                request.result(LIMIT_S)
    assert held.calls == 1 and graphs.builds == 0 and graphs.cached == []
    graphs.session("layer", doubled)
    assert graphs.builds == 1


def test_a_waiter_whose_builder_was_cancelled_builds_the_graph_itself(model_bytes) -> None:
    memory = DerivedMemory(1 << 40, builds_at_once=1)
    graphs = DerivedGraphs(onnx.load_from_string(model_bytes), providers=[CPU], threads=1, memory=memory)
    held = HeldBuild()
    with ThreadPoolExecutor(3) as pool:
        blocker = in_thread(pool, lambda: graphs.session("blocker", held))
        assert held.started.wait(LIMIT_S)
        builder_token = WatchedToken()
        builder = in_thread(pool, lambda: graphs.session("wanted", doubled, builder_token))
        assert builder_token.looked_at.wait(LIMIT_S)  # waiting for the only turn
        waiter_token = WatchedToken()
        waiter = in_thread(pool, lambda: graphs.session("wanted", doubled, waiter_token))
        assert waiter_token.looked_at.wait(LIMIT_S)  # waiting for the builder
        builder_token.cancel()
        with pytest.raises(Cancelled):
            builder.result(LIMIT_S)
        held.release.set()
        blocker.result(LIMIT_S)
        assert waiter.result(LIMIT_S) is graphs.session("wanted", never_called)
    assert graphs.builds == 2
