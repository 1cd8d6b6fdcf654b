"""Row 2: the gradient methods, one explain call each (the image's top class), against plain forwards of the same
rows (the limit: a backward should cost at most 2.5 forwards, so forward + backward at most 3.5) and against Captum
or Zennit on the torch model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench_context import Bench
from common import log
from engine import Served
from measure import Candidate, interleaved
from peers import gradients as peers
from table import Row, Target

from onnxplain.server.errors import FailedPrecondition

FAMILY = 2
TARGET = Target(ratio=3.5, beat_peer=True)
# Calls of more backward rows than this are timed once per round; shorter ones plan.short_runs times.
SHORT_CALL_ROWS = 4


@dataclass(frozen=True)
class GradientCase:
    method: str
    peer: peers.PeerFactory
    peer_name: str


CASES = (
    GradientCase("saliency", peers.saliency, "Captum Saliency"),
    GradientCase("integrated_gradients", peers.integrated_gradients, "Captum IntegratedGradients"),
    GradientCase("grad_cam", peers.grad_cam, "Captum LayerGradCam"),
    GradientCase("guided_backprop", peers.guided_backprop, "Captum GuidedBackprop"),
    GradientCase("lrp", peers.lrp, "Zennit EpsilonPlusFlat"),
)


def rows(bench: Bench) -> list[Row]:
    results = []
    for spec, steps in bench.plan.gradient_models:
        served = bench.engine.serve(spec)
        for case in CASES:
            results.append(gradient_row(bench, served, case, steps))
    return results


def gradient_row(bench: Bench, served: Served, case: GradientCase, steps: int) -> Row:
    params = {"steps": steps} if case.method == "integrated_gradients" else {}
    work = f"{params['steps']} steps" if params else "1 call"

    def ours() -> object:
        return bench.engine.explain(served, case.method, params)

    try:
        first = ours()  # builds the backward graph; tells how many rows a call runs
    except FailedPrecondition as error:
        log(f"{served.label} {case.method}: {error}")
        return Row(FAMILY, case.method, served.label, work, 0, None, note=f"unavailable: {error}")
    rows_per_call = first.cost.backward_passes
    options = {"steps": steps, "batch": served.best_batch()}
    peer: Callable[[], object] = case.peer(served.module, served.image, served.target, options)
    runs = 1 if rows_per_call > SHORT_CALL_ROWS else bench.plan.short_runs
    candidates = {
        "limit": Candidate(served.limit(rows_per_call), served.settle_limit, runs=runs),
        "ours": Candidate(ours, served.settle_engine, runs=runs),
        "peer": Candidate(peer, runs=runs),
    }
    seconds, results = interleaved(f"{served.label} {case.method}", candidates, bench.plan.repeat)
    cost = results["ours"].cost
    return Row(
        FAMILY,
        case.method,
        served.label,
        work,
        cost.forward_passes,
        seconds["ours"],
        seconds["limit"],
        seconds["peer"],
        case.peer_name,
        TARGET,
        f"{cost.backward_passes} backward rows, limit {rows_per_call} forwards",
    )
