"""Row 6: how time grows. With the image size (RISE and one saliency call at each size of the same architecture)
ours/limit should stay put while ms/pass follows the forward's cost; with the number of masks (RISE) and of steps
(integrated gradients) ms/pass should stay put: time linear in passes, so the figures at a smaller count stand for
any count."""

from __future__ import annotations

from bench_context import Bench
from engine import Served
from measure import Candidate, interleaved
from table import Row, Target

FAMILY = 6
RISE_TARGET = Target(ratio=1.10)
GRADIENT_TARGET = Target(ratio=3.5)


def rows(bench: Bench) -> list[Row]:
    plan = bench.plan
    results = []
    for spec in plan.scaling_sizes:
        served = bench.engine.serve(spec)
        results.append(scaled_row(bench, served, "rise", {"num_masks": plan.scaling_masks, "seed": 0}))
        results.append(scaled_row(bench, served, "saliency", {}))
    served = bench.engine.serve(plan.scaling_sizes[len(plan.scaling_sizes) // 2])
    for masks in plan.mask_counts:
        results.append(scaled_row(bench, served, "rise", {"num_masks": masks, "seed": 0}))
    for steps in plan.step_counts:
        results.append(scaled_row(bench, served, "integrated_gradients", {"steps": steps}))
    return results


def scaled_row(bench: Bench, served: Served, method: str, params: dict) -> Row:
    """Ours against plain forwards of the rows (gradients) or masks (RISE) it runs."""

    def ours() -> object:
        return bench.engine.explain(served, method, params)

    first = ours()
    passes = first.cost.backward_passes or params["num_masks"]
    runs = bench.plan.short_runs if passes == 1 else 1
    candidates = {
        "limit": Candidate(served.limit(passes), served.settle_limit, runs=runs),
        "ours": Candidate(ours, served.settle_engine, warm_up=lambda: None, runs=runs),
    }
    seconds, results = interleaved(f"{served.label} {method} {params}", candidates, bench.plan.repeat)
    cost = results["ours"].cost
    work = {"rise": "{num_masks} masks", "integrated_gradients": "{steps} steps"}.get(method, "1 call")
    return Row(
        FAMILY,
        f"{method} scaling",
        served.label,
        work.format(**params),
        cost.forward_passes,
        seconds["ours"],
        seconds["limit"],
        target=RISE_TARGET if method == "rise" else GRADIENT_TARGET,
        note=f"limit: {passes} forwards",
    )
