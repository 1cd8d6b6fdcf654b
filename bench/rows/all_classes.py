"""Row 3: every class at once against one target at a time, K times (K = the classes of the head).

RISE gives every class's map from the same passes: ours asks for all K targets in one call, the limit is the plain
forwards of the masks, the peer K single-target calls (one timed, times K). Active saliency needs every class's
gradient of the image (K backward rows in one call); the peer is K single-target saliency calls, the limit K plain
forwards."""

from __future__ import annotations

from bench_context import Bench
from engine import Served
from measure import Candidate, interleaved
from table import Row, Target

from onnxplain.server.handlers.schema import TargetQuery

FAMILY = 3
RISE_TARGET = Target(ratio=1.10, beat_peer=True)
GRADIENT_TARGET = Target(ratio=3.5, beat_peer=True)


def rows(bench: Bench) -> list[Row]:
    results = [rise_row(bench, bench.engine.serve(spec), masks) for spec, masks in bench.plan.all_classes_rise]
    for spec in bench.plan.all_classes_gradients:
        results.append(gradient_row(bench, bench.engine.serve(spec)))
    return results


def rise_row(bench: Bench, served: Served, masks: int) -> Row:
    classes = served.model.num_classes
    params = {"num_masks": masks, "seed": 0}
    every_class = [TargetQuery(top_k=classes)]
    candidates = {
        "limit": Candidate(served.limit(masks), served.settle_limit),
        "ours": Candidate(lambda: bench.engine.explain(served, "rise", params, every_class), served.settle_engine),
        "single": Candidate(lambda: bench.engine.explain(served, "rise", params)),
    }
    seconds, results = interleaved(f"{served.label} rise, every class", candidates, bench.plan.repeat)
    ours = results["ours"]
    assert len(ours.explanations[0].attributions) == classes
    return Row(
        FAMILY,
        f"RISE, {classes} classes",
        served.label,
        f"{masks} masks, {classes} maps",
        ours.cost.forward_passes,
        seconds["ours"],
        seconds["limit"],
        seconds["single"] * classes,
        f"1 target x {classes}",
        RISE_TARGET,
        f"one single-target call {seconds['single'] * 1000:.1f} ms",
    )


def gradient_row(bench: Bench, served: Served) -> Row:
    classes = served.model.num_classes
    candidates = {
        "limit": Candidate(served.limit(classes), served.settle_limit),
        "ours": Candidate(lambda: bench.engine.explain(served, "active_saliency", {}), served.settle_engine),
        "single": Candidate(lambda: bench.engine.explain(served, "saliency", {}), runs=bench.plan.short_runs),
    }
    seconds, results = interleaved(f"{served.label} active saliency", candidates, bench.plan.repeat)
    cost = results["ours"].cost
    return Row(
        FAMILY,
        f"active_saliency, {classes} classes",
        served.label,
        f"{classes} gradients",
        cost.forward_passes,
        seconds["ours"],
        seconds["limit"],
        seconds["single"] * classes,
        f"saliency x {classes}",
        GRADIENT_TARGET,
        f"one saliency call {seconds['single'] * 1000:.1f} ms; {cost.backward_passes} backward rows",
    )
