"""Row 4: the explain call through gRPC (a real server process on loopback, the Python client) against the same
call to the engine in this process (handlers.explain): what the transport adds. Both sides run the same model with
the same threads, one after the other, never at once."""

from __future__ import annotations

from collections.abc import Callable

from bench_context import Bench
from common import settle
from engine import SETTLE_SECONDS, Served, write_model
from live_server import serving
from measure import Candidate, interleaved
from table import Row, Target

from onnxplain.client import Client

FAMILY = 4
RISE_TARGET = Target(ratio=1.05)
SALIENCY_TARGET = Target(gap_ms=2.0)
# A single saliency call is short: more timed runs per round than the other short calls.
SALIENCY_RUNS_FACTOR = 3


def rows(bench: Bench) -> list[Row]:
    plan = bench.plan
    specs = list(dict.fromkeys([spec for spec, _ in plan.transport_rise] + list(plan.transport_saliency)))
    repository = bench.repository("transport")
    for spec in specs:
        write_model(repository, spec, bench.engine.onnx(spec))
    results = []
    with serving(repository, bench.threads, bench.engine.settings.device) as client:
        for spec, masks in plan.transport_rise:
            params = {"num_masks": masks, "seed": 0}
            results.append(transport_row(bench, client, bench.engine.serve(spec), "rise", params, 1))
        for spec in plan.transport_saliency:
            runs = plan.short_runs * SALIENCY_RUNS_FACTOR
            results.append(transport_row(bench, client, bench.engine.serve(spec), "saliency", {}, runs))
    return results


def transport_row(bench: Bench, client: Client, served: Served, method: str, params: dict, runs: int) -> Row:
    name = served.spec.name

    def remote() -> object:
        return client.explain(name, served.image, method=method, target=served.target, **params)

    def settle_remote() -> None:
        settle(lambda: client.predict(name, served.image), SETTLE_SECONDS)

    local: Callable[[], object] = lambda: bench.engine.explain(served, method, params)  # noqa: E731
    candidates = {
        "limit": Candidate(local, served.settle_engine, runs=runs),
        "ours": Candidate(remote, settle_remote, runs=runs),
    }
    seconds, results = interleaved(f"{served.label} {method} over gRPC", candidates, bench.plan.repeat)
    cost = results["limit"].cost
    work = f"{params['num_masks']} masks" if "num_masks" in params else "1 call"
    return Row(
        FAMILY,
        f"{method} via gRPC",
        served.label,
        work,
        cost.forward_passes,
        seconds["ours"],
        seconds["limit"],
        target=RISE_TARGET if method == "rise" else SALIENCY_TARGET,
        note="limit: the same call in process (handlers.explain)",
    )
