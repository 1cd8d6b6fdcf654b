"""Prometheus metrics of the server process, served as text on their own HTTP port.

One module-level registry: a process runs one server, and the request interceptor, the executor hand-off and the
dynamic batcher record into it with plain function calls instead of passing a metrics object around.

Model and method labels come from requests, which anyone can send: a name is a label value only when the repository
or the method registry knows it, else "", so a client cannot create unbounded series.
"""

from __future__ import annotations

import time
import typing
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from onnxplain.server.engine.derived import DERIVED_MEMORY, DerivedMemory
from onnxplain.server.methods.registry import METHODS
from onnxplain.server.observability.call import Call, current_call
from onnxplain.server.repository.registry import ModelRegistry, State

Result = TypeVar("Result")

# 1 ms to 5 min: a prediction to a long perturbation explanation.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# 100 µs (a batcher's queue delay) to a minute (a saturated worker pool).
QUEUE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

REGISTRY = CollectorRegistry()
prometheus_client.ProcessCollector(registry=REGISTRY)
prometheus_client.PlatformCollector(registry=REGISTRY)
prometheus_client.GCCollector(registry=REGISTRY)

REQUESTS = Counter(
    "onnxplain_requests",
    "gRPC calls finished, by RPC, model, attribution method and status code",
    ["rpc", "model", "method", "code"],
    registry=REGISTRY,
)
REQUEST_DURATION = Histogram(
    "onnxplain_request_duration_seconds",
    "Time from a call's arrival to its status",
    ["rpc", "model"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "onnxplain_requests_in_flight",
    "gRPC calls being served now, by model; sum over models for the process total (the autoscaling signal)",
    ["model"],
    registry=REGISTRY,
)
FORWARD_PASSES = Counter(
    "onnxplain_forward_passes", "Images run forward through a model", ["model", "method"], registry=REGISTRY
)
BACKWARD_PASSES = Counter(
    "onnxplain_backward_passes", "Backward (gradient) passes run", ["model", "method"], registry=REGISTRY
)
QUEUE_DURATION = Histogram(
    "onnxplain_queue_duration_seconds",
    "Time work waited before it ran: for a turn of long work (queue=admission), a worker thread (queue=worker) or in a "
    "model's batch queue (queue=batch)",
    ["model", "queue"],
    buckets=QUEUE_BUCKETS,
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "onnxplain_batch_size",
    "Images per ONNX Runtime run of a model's scheduler",
    ["model"],
    buckets=BATCH_BUCKETS,
    registry=REGISTRY,
)


class ModelStates(Collector):
    """onnxplain_model_state{model, version, state}: 1 for each version's current state, 0 for the others.
    Read from the registry at scrape time, so it is never stale."""

    def __init__(self) -> None:
        self.registry: ModelRegistry | None = None

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "onnxplain_model_state",
            "Load state of each model version (1: current)",
            labels=["model", "version", "state"],
        )
        for status in self.registry.statuses() if self.registry else []:
            for state in typing.get_args(State):
                family.add_metric([status.name, status.version, state], float(status.state == state))
        yield family

    def known(self, model: str) -> bool:
        return self.registry is not None and any(status.name == model for status in self.registry.statuses())


MODEL_STATES = ModelStates()
REGISTRY.register(MODEL_STATES)


class DerivedMemoryMetrics(Collector):
    """The derived-graph memory budget (engine/derived.py), read at scrape time: budget, bytes held, sessions alive,
    evictions and refusals since start."""

    def __init__(self, memory: DerivedMemory) -> None:
        self.memory = memory

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        memory = self.memory
        yield GaugeMetricFamily(
            "onnxplain_derived_memory_budget_bytes",
            "Bytes the sessions of derived graphs (backward, CAM and RISE graphs) of all models may hold",
            value=memory.limit,
        )
        yield GaugeMetricFamily(
            "onnxplain_derived_memory_used_bytes",
            "Estimated bytes held by derived-graph sessions alive now, and by builds reserving room",
            value=memory.used + memory.reserved,
        )
        yield GaugeMetricFamily("onnxplain_derived_sessions", "Derived-graph sessions alive now", value=memory.sessions)
        yield CounterMetricFamily(
            "onnxplain_derived_evictions",
            "Derived-graph sessions evicted from the cache (least recently used first) to stay within the budget",
            value=memory.evictions,
        )
        yield CounterMetricFamily(
            "onnxplain_derived_refusals",
            "Derived graphs refused (RESOURCE_EXHAUSTED) because they could not fit the memory budget",
            value=memory.refusals,
        )


REGISTRY.register(DerivedMemoryMetrics(DERIVED_MEMORY))


def observe_queue_time(model: str, seconds: float, queue: str = "batch") -> None:
    """How long one piece of work waited in a queue before it ran."""
    QUEUE_DURATION.labels(model_label(model), queue).observe(seconds)


def observe_batch(model: str, size: int) -> None:
    """How many images one ONNX Runtime run took."""
    BATCH_SIZE.labels(model_label(model)).observe(size)


def batch_observer(model: str) -> Callable[[int, list[float]], None]:
    """The scheduler's BatchObserver for a model: each run's size, and each merged request's wait in its queue."""

    def observe(rows: int, waits: list[float]) -> None:
        observe_batch(model, rows)
        for seconds in waits:
            observe_queue_time(model, seconds, "batch")

    return observe


def queued(work: Callable[..., Result]) -> Callable[..., Result]:
    """Wrap work just before it is submitted to an executor: its wait for a worker thread becomes queue time of
    the current call's model."""
    call = current_call.get()
    model = call.model if call else ""
    submitted = time.perf_counter()

    def run(*args: object) -> Result:
        observe_queue_time(model, time.perf_counter() - submitted, "worker")
        return work(*args)

    return run


@contextmanager
def tracked(call: Call) -> Iterator[None]:
    """Count the call in flight while the block runs, then record its status, latency and passes."""
    model, method = model_label(call.model), method_label(call.method)
    in_flight = IN_FLIGHT.labels(model)
    in_flight.inc()
    try:
        yield
    finally:
        in_flight.dec()
        REQUESTS.labels(call.rpc, model, method, call.code.name).inc()
        REQUEST_DURATION.labels(call.rpc, model).observe(call.duration)
        if call.forward_passes:
            FORWARD_PASSES.labels(model, method).inc(call.forward_passes)
        if call.backward_passes:
            BACKWARD_PASSES.labels(model, method).inc(call.backward_passes)


def model_label(model: str) -> str:
    return model if MODEL_STATES.known(model) else ""


# The label of a call that names several methods (an Evaluate request comparing explainers): one value, so no
# combination of method names becomes a series of its own.
SEVERAL_METHODS = "several"


def method_label(methods: str) -> str:
    """The call's method when the registry knows it, "several" when it names more than one, else ""."""
    known = {name for name in methods.split(",") if name in METHODS}
    if len(known) > 1:
        return SEVERAL_METHODS
    return known.pop() if known else ""


def serve_metrics(host: str, port: int, registry: ModelRegistry) -> Callable[[], None]:
    """Serve /metrics on host:port from a daemon thread (port 0: off) and watch the registry's model states.
    Returns the function that stops the HTTP server."""
    MODEL_STATES.registry = registry
    if not port:
        return lambda: None
    prometheus_client.disable_created_metrics()
    server, _ = prometheus_client.start_http_server(port, addr=host.strip("[]"), registry=REGISTRY)
    print(f"onnxplain metrics on http://{host}:{port}/metrics", flush=True)
    return server.shutdown
