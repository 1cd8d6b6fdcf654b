"""Row 1: RISE and occlusion against the same number of plain forwards (the limit) and against the peer (a
straightforward RISE in PyTorch; Captum's Occlusion), the peers batched at the limit's best batch size."""

from __future__ import annotations

import math

import numpy as np
from bench_context import Bench
from engine import Served
from measure import Candidate, interleaved
from peers.perturbation import captum_occlusion, torch_rise
from table import Row, Target

FAMILY = 1
# On CPU (goal 1.05): the passes are the work, the rest must be noise.
TARGET = Target(ratio=1.10, beat_peer=True)
# Warm-up size: allocations and first-run costs stay out of the rounds.
WARM_UP_MASKS = 16


def rows(bench: Bench) -> list[Row]:
    results = [rise_row(bench, bench.engine.serve(spec), masks) for spec, masks in bench.plan.rise]
    for spec, window, stride in bench.plan.occlusion:
        results.append(occlusion_row(bench, bench.engine.serve(spec), window, stride))
    return results


def rise_row(bench: Bench, served: Served, masks: int) -> Row:
    batch = served.best_batch()
    engine = bench.engine

    def ours(count: int) -> object:
        return engine.explain(served, "rise", {"num_masks": count, "seed": 0})

    candidates = {
        "limit": Candidate(served.limit(masks), served.settle_limit, served.limit(WARM_UP_MASKS)),
        "ours": Candidate(lambda: ours(masks), served.settle_engine, lambda: ours(WARM_UP_MASKS)),
        "peer": Candidate(
            torch_rise(served.module, served.image, served.target, masks, batch),
            warm_up=torch_rise(served.module, served.image, served.target, WARM_UP_MASKS, batch),
        ),
    }
    seconds, results = interleaved(f"{served.label} rise", candidates, bench.plan.repeat)
    cost = results["ours"].cost
    return Row(
        FAMILY,
        "RISE",
        served.label,
        f"{masks} masks",
        cost.forward_passes,
        seconds["ours"],
        seconds["limit"],
        seconds["peer"],
        "RISE in PyTorch",
        TARGET,
        f"batch: limit {batch}, ours {cost.batch_size}",
    )


def occlusion_row(bench: Bench, served: Served, window: int, stride: int) -> Row:
    batch = served.best_batch()
    windows = window_count(served.spec.size, window, stride) ** 2
    params = {"window": [window, window], "stride": [stride, stride], "baseline": 0.0}
    peer = captum_occlusion(served.module, served.image, served.target, window, stride, batch)
    candidates = {
        "limit": Candidate(served.limit(windows), served.settle_limit),
        "ours": Candidate(lambda: bench.engine.explain(served, "occlusion", params), served.settle_engine),
        "peer": Candidate(peer),
    }
    seconds, results = interleaved(f"{served.label} occlusion", candidates, bench.plan.repeat)
    ours = results["ours"]
    attribution = ours.explanations[0].attributions[0].attribution
    return Row(
        FAMILY,
        "occlusion",
        served.label,
        f"{window}x{window}/{stride}: {windows} windows",
        ours.cost.forward_passes,
        seconds["ours"],
        seconds["limit"],
        seconds["peer"],
        "Captum Occlusion",
        TARGET,
        f"maps differ by {relative_gap(attribution, results['peer']):.0e} of Captum's max",
    )


def window_count(size: int, window: int, stride: int) -> int:
    """Window positions per axis, Captum's convention (the last window cut at the border)."""
    return math.ceil((size - window) / stride) + 1


def relative_gap(ours: np.ndarray, theirs: np.ndarray) -> float:
    """Both sides must compute the same map, or the timing compares different work."""
    return float(np.abs(ours - theirs).max()) / max(float(np.abs(theirs).max()), 1e-12)
