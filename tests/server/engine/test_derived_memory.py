"""The derived-graph memory budget: sessions are charged their cost while alive, the least recently used idle ones
(of any model) are evicted to make room, running ones never are, a session a request still holds stays charged until
it is let go, a graph that cannot fit is refused with RESOURCE_EXHAUSTED before its session is created, and the
budget, use and evictions are exported as Prometheus metrics."""

from __future__ import annotations

import gc
import weakref

import onnx
import pytest
from prometheus_client import CollectorRegistry
from support.models import SmallCNN, export

from onnxplain.server.engine.derived import DERIVED_MEMORY, DerivedGraphs, DerivedMemory, activation_bytes
from onnxplain.server.engine.providers import CPU
from onnxplain.server.errors import ResourceExhausted
from onnxplain.server.observability.metrics import REGISTRY, DerivedMemoryMetrics

SHAPE = (3, 8, 8)


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return onnx.load_from_string(export(SmallCNN(classes=64, seed=7), (1, *SHAPE)))


@pytest.fixture
def memory() -> DerivedMemory:
    return DerivedMemory(1 << 40)


def graphs_of(model: onnx.ModelProto, memory: DerivedMemory, **kwargs) -> DerivedGraphs:
    return DerivedGraphs(model, providers=[CPU], threads=1, memory=memory, **kwargs)


def doubled(full: onnx.ModelProto) -> onnx.ModelProto:
    output = full.graph.output[0].name
    full.graph.node.append(onnx.helper.make_node("Add", [output, output], ["doubled"]))
    full.graph.output.append(onnx.helper.make_tensor_value_info("doubled", onnx.TensorProto.FLOAT, None))
    return full


def cost_of_one(model: onnx.ModelProto) -> int:
    """What one `doubled` session is charged (every key builds the same graph)."""
    graphs = graphs_of(model, DerivedMemory(1 << 40))
    return graphs.session("probe", doubled).cost


def test_a_session_is_charged_its_graph_its_shared_weights_and_one_images_activations(model, memory) -> None:
    graphs = graphs_of(model, memory)
    session = graphs.session("a", doubled)
    derived = doubled(graphs.weights.model())
    shared = graphs.weights.detach(derived)
    assert session.cost == derived.ByteSize() + graphs.weights.bytes_of(shared) + activation_bytes(derived)
    # One image's intermediate tensors: at least the first convolution's output, 8 channels of 8 x 8 floats.
    assert activation_bytes(derived) >= 8 * 8 * 8 * 4
    assert (memory.used, memory.sessions, memory.reserved) == (session.cost, 1, 0)


def test_the_least_recently_used_session_goes_first(model, memory) -> None:
    cost = cost_of_one(model)
    graphs = graphs_of(model, memory)
    for key in ("a", "b"):
        graphs.session(key, doubled)
    memory.set_limit(3 * cost - 1)  # room for two
    graphs.session("a", doubled)  # "b" is now the least recently used
    graphs.session("c", doubled)
    assert graphs.cached == ["a", "c"]
    assert (memory.evictions, memory.used, graphs.builds) == (1, 2 * cost, 3)
    graphs.session("b", doubled)
    assert graphs.cached == ["c", "b"]
    assert memory.evictions == 2


def test_eviction_takes_the_least_recently_used_session_of_any_model(model, memory) -> None:
    cost = cost_of_one(model)
    first, second = graphs_of(model, memory), graphs_of(model, memory)
    first.session("old", doubled)
    second.session("newer", doubled)
    memory.set_limit(2 * cost)
    second.session("newest", doubled)
    assert (first.cached, second.cached) == ([], ["newer", "newest"])


def test_a_running_session_is_never_evicted(model, memory) -> None:
    cost = cost_of_one(model)
    graphs = graphs_of(model, memory)
    running = graphs.session("running", doubled)
    graphs.session("idle", doubled)
    with running.in_use():
        memory.set_limit(2 * cost)
        graphs.session("new", doubled)
        assert graphs.cached == ["running", "new"]
    del running


def test_an_evicted_session_a_request_holds_stays_charged_until_let_go(model, memory) -> None:
    cost = cost_of_one(model)
    graphs = graphs_of(model, memory)
    held = graphs.session("held", doubled)
    memory.set_limit(0)
    assert graphs.cached == [] and memory.evictions == 1
    assert memory.used == cost  # the request still runs on it
    watcher = weakref.ref(held)
    del held
    gc.collect()
    assert watcher() is None
    assert (memory.used, memory.sessions) == (0, 0)


def test_a_graph_that_cannot_fit_is_refused_before_its_session_is_created(model, memory) -> None:
    cost = cost_of_one(model)
    graphs = graphs_of(model, memory)
    running = graphs.session("running", doubled)
    memory.set_limit(2 * cost - 1)
    with running.in_use(), pytest.raises(ResourceExhausted, match="memory budget"):
        graphs.session("refused", doubled)
    assert (graphs.builds, memory.refusals, memory.reserved, memory.used) == (1, 1, 0, cost)
    assert graphs.cached == ["running"]
    memory.set_limit(cost - 1)
    with pytest.raises(ResourceExhausted, match=r"--memory-budget"):  # even with everything evicted
        graphs.session("refused", doubled)
    assert graphs.cached == [] and memory.refusals == 2
    del running


def test_a_model_caches_at_most_its_number_of_sessions(model, memory) -> None:
    graphs = graphs_of(model, memory, max_sessions=2)
    for key in ("a", "b", "c"):
        graphs.session(key, doubled)
    assert graphs.cached == ["b", "c"]
    assert memory.evictions == 1


def test_the_budget_its_use_and_evictions_are_exported(model, memory) -> None:
    cost = cost_of_one(model)
    graphs = graphs_of(model, memory)
    for key in ("a", "b"):
        graphs.session(key, doubled)
    memory.set_limit(cost)
    exported = CollectorRegistry()
    exported.register(DerivedMemoryMetrics(memory))
    assert exported.get_sample_value("onnxplain_derived_memory_budget_bytes") == cost
    assert exported.get_sample_value("onnxplain_derived_memory_used_bytes") == cost
    assert exported.get_sample_value("onnxplain_derived_sessions") == 1
    assert exported.get_sample_value("onnxplain_derived_evictions_total") == 1
    assert exported.get_sample_value("onnxplain_derived_refusals_total") == 0
    # The server's registry exports the process's budget.
    assert REGISTRY.get_sample_value("onnxplain_derived_memory_budget_bytes") == DERIVED_MEMORY.limit


def test_a_build_holds_room_for_its_copy_of_the_weights_before_it_starts(model, memory) -> None:
    cost = cost_of_one(model)
    graphs = graphs_of(model, memory)
    graphs.session("old", doubled)
    seen = []

    def observed(full: onnx.ModelProto) -> onnx.ModelProto:
        seen.append((memory.reserved, graphs.cached))
        return doubled(full)

    memory.set_limit(cost + graphs.weights.nbytes - 1)
    graphs.session("new", observed)
    # The old session was evicted before the build began, to make room for the copy the builder works on.
    assert seen == [(graphs.weights.nbytes, [])]
    assert memory.evictions == 1 and memory.reserved == 0


def test_a_build_whose_copy_of_the_weights_cannot_fit_is_refused_before_it_starts(model, memory) -> None:
    graphs = graphs_of(model, memory)
    memory.set_limit(graphs.weights.nbytes - 1)
    built = []
    with pytest.raises(ResourceExhausted, match="--memory-budget"):
        graphs.session("refused", lambda full: built.append(full) or doubled(full))
    assert (built, memory.refusals, memory.reserved, memory.used) == ([], 1, 0, 0)


def test_a_models_own_budget_evicts_its_own_sessions_and_refuses_what_cannot_fit_it(model, memory) -> None:
    cost = cost_of_one(model)
    other = graphs_of(model, memory)
    other.session("other's", doubled)
    limited = graphs_of(model, memory, memory_limit=2 * cost)
    for key in ("a", "b", "c"):
        limited.session(key, doubled)
    # Within its own budget of two sessions: its oldest goes, the other model's stays.
    assert (limited.cached, other.cached) == (["b", "c"], ["other's"])
    assert limited.used == 2 * cost and memory.used == 3 * cost
    small = graphs_of(model, memory, memory_limit=cost - 1)
    with pytest.raises(ResourceExhausted, match=r"memory_budget_mb \(config.yaml\)"):
        small.session("refused", doubled)
    assert other.cached == ["other's"] and (small.used, small.reserved) == (0, 0)
