"""Memory as a budget (#17): every method on every model of a repository, through a live server whose derived-graph
budget (--memory-budget) holds only a few graphs at once, so the sweep must evict. After each call the test reads the
server's resident memory from /proc and the derived-memory gauges from /metrics: the derived sessions never hold more
than the budget, every call runs (or is refused exactly as metadata said), the server's peak resident memory grows
over its post-load baseline by less than the budget plus an allowance, and with the server idle after the sweep it
is back under that bound.

The models are torchvision architectures with random weights, a few MB each, at three input sizes, one ending in a
Softmax. What the allowance covers, besides the derived sessions, is measured in ALLOWANCE_MIB's comment.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from support.models import WithSoftmax, export, write_model
from support.resident import derived_gauges, memory, reset_peak
from support.scrape import in_flight
from support.servers import free_port, start_server
from support.zoo import TORCHVISION, cheap_parameters

from onnxplain.client import Client, MethodSupport, OnnxplainError

MIB = 1024 * 1024


@dataclass(frozen=True)
class SweptModel:
    architecture: str
    size: int
    softmax: bool = False


# Weights 6.1, 2.9 and 3.8 MB. Derived graphs are charged their weights, their own tensors and one image's
# activations (engine/derived.py): the sweep builds 15 graphs charged 3.7 to 25.5 MiB each (mnasnet's LRP graph the
# largest), 158 MiB together.
MODELS = {
    "mobilenet": SweptModel("mobilenet_v3_small", 64),
    "squeezenet": SweptModel("squeezenet1_1", 48, softmax=True),
    "mnasnet": SweptModel("mnasnet0_5", 80),
}
# Holds the largest graph and a few others: a third of what the sweep builds, so it must evict.
BUDGET_MIB = 48
# A perturbation batch's inputs and activations (--batch-memory-mb): each main session keeps an arena that grows to its
# largest run and is outside the budget. At the default (a quarter of free memory, up to 1 GiB) the idle server ended
# this sweep 328 MiB above its baseline, mostly Score-CAM's batches.
BATCH_MEMORY_MIB = 8
# What the server may hold beyond the derived sessions' charge: the three main sessions' arenas (each at most twice a
# batch, as ONNX Runtime's arena extends in powers of two), the derived sessions' runs (without an arena: freed when
# the run ends, though glibc may keep freed blocks), the requests' and maps' numpy buffers, and the code and modules
# loaded on a method's first call. Measured on a 2-core VM over 5 runs, 2 of them beside two CPU-bound processes: the
# peak grew 122 to 126 MiB over the baseline (74 to 78 MiB beyond the budget; LRP on squeezenet the highest call),
# the idle server 87 to 105 MiB, with Score-CAM building its masks a batch at a time (all channels' float64 masks at
# once peaked at +286 MiB, on mnasnet). Twice the largest overshoot: allocator reuse varies with the worker thread
# that takes each call. The previous code (84dac3d: a session per graph with its own weights and arena) ended the same
# sweep 305 MiB above its baseline.
ALLOWANCE_MIB = 160


@dataclass(frozen=True)
class Sample:
    """One call's readings: the server's peak resident memory during the call and its resident memory and
    derived-memory gauges after it."""

    call: str
    peak: int
    resident: int
    used: float
    budget: float
    evictions: float
    refusals: float


def _sample(pid: int, metrics_port: int, call: str) -> Sample:
    """Read after `call`; the peak is since the last _reset_peak."""
    gauges, resident = derived_gauges(metrics_port), memory(pid)
    return Sample(
        call=call,
        peak=resident["VmHWM"],
        resident=resident["VmRSS"],
        used=gauges["memory_used_bytes"],
        budget=gauges["memory_budget_bytes"],
        evictions=gauges["evictions_total"],
        refusals=gauges["refusals_total"],
    )


def _repository(directory: Path) -> Path:
    repository = directory / "repository"
    for name, model in MODELS.items():
        module = TORCHVISION[model.architecture].module()
        module = WithSoftmax(module) if model.softmax else module
        write_model(repository, name, export(module, (1, 3, model.size, model.size)))
    return repository


@dataclass
class Sweep:
    baseline: int
    samples: list[Sample]
    idle: Sample
    methods: list[str]
    outcomes: dict[str, str]

    def peaks_over(self, growth: int) -> list[str]:
        """The calls whose peak grew more than `growth` bytes over the baseline, with the growth in MiB."""
        return [
            f"{sample.call}: +{(sample.peak - self.baseline) / MIB:.0f} MiB"
            for sample in self.samples
            if sample.peak > self.baseline + growth
        ]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Iterator[Sweep]:
    """Every method on every model, one call at a time, each call read as a Sample; then the idle server's Sample."""
    repository = _repository(tmp_path_factory.mktemp("memory"))
    metrics_port = free_port()
    server = start_server(
        repository,
        *("--metrics-port", str(metrics_port)),
        *("--memory-budget", str(BUDGET_MIB), "--batch-memory-mb", str(BATCH_MEMORY_MIB)),
    )
    pid = server.process.pid
    try:
        with Client(server.target, timeout=120) as client:
            methods = [method.name for method in client.methods()]
            support = {name: {method.name: method for method in client.metadata(name).methods} for name in MODELS}
            baseline = memory(pid)["VmRSS"]
            samples, outcomes = [], {}
            for name, model in MODELS.items():
                image = np.random.default_rng(model.size).standard_normal((3, model.size, model.size), np.float32)
                cheap = cheap_parameters(model.size)
                for method in methods:
                    call = f"{method} on {name}"
                    reset_peak(pid)
                    outcomes[call] = _outcome(client, name, image, method, cheap.get(method, {}), support[name])
                    samples.append(_sample(pid, metrics_port, call))
        assert in_flight(metrics_port) == 0
        yield Sweep(baseline, samples, _sample(pid, metrics_port, "idle"), methods, outcomes)
    finally:
        assert server.stop() == 0, "".join(server.output)


def _outcome(
    client: Client, model: str, image: np.ndarray, method: str, parameters: dict, support: dict[str, MethodSupport]
) -> str:
    """'' when the call went as metadata said (finite maps, or FAILED_PRECONDITION with metadata's reason); else
    what went wrong."""
    expected = support[method]
    try:
        explanation = client.explain(model, image, method=method, target=1, **parameters)
    except OnnxplainError as error:
        refused_as_said = (
            not expected.supported
            and error.code is grpc.StatusCode.FAILED_PRECONDITION
            and expected.reason in error.message
        )
        return "" if refused_as_said else f"{error.code.name}: {error.message}"
    if not expected.supported:
        return f"ran, though metadata said: {expected.reason}"
    return "" if np.all(np.isfinite(explanation.attribution)) else "maps that are not finite"


def test_every_method_ran_on_every_model_or_was_refused_as_metadata_said(sweep: Sweep) -> None:
    assert len(sweep.outcomes) == len(MODELS) * len(sweep.methods)
    assert not {call: outcome for call, outcome in sweep.outcomes.items() if outcome}


def test_the_derived_sessions_stayed_within_the_budget_by_evicting(sweep: Sweep) -> None:
    assert {sample.budget for sample in sweep.samples} == {BUDGET_MIB * MIB}
    assert not [sample.call for sample in sweep.samples if sample.used > sample.budget]
    assert sweep.idle.evictions > 0
    assert sweep.idle.refusals == 0


def test_resident_memory_grew_by_less_than_the_budget_and_allowance(sweep: Sweep) -> None:
    over = sweep.peaks_over((BUDGET_MIB + ALLOWANCE_MIB) * MIB)
    assert not over, f"peaks above the baseline ({sweep.baseline / MIB:.0f} MiB) + {BUDGET_MIB + ALLOWANCE_MIB} MiB"


def test_the_idle_server_is_back_within_the_budget_and_allowance(sweep: Sweep) -> None:
    assert sweep.idle.used <= sweep.idle.budget
    assert sweep.idle.resident <= sweep.baseline + (BUDGET_MIB + ALLOWANCE_MIB) * MIB
