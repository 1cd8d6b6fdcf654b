"""An Evaluate request's forward passes, counted before any work: each metric's declared cost equals the passes its
computation really makes (counted through the score and explain functions it is given), and the total adds up
methods, metrics and re-runs as the papers' definitions count them (RISE: ceil(HW / step) + 1 states per target;
Bhatt et al.: runs + 1; Yeh et al.: samples + 1 for infidelity, one explanation per sample for max-sensitivity;
Adebayo et al.: one explanation of every image per cascade step)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from onnxplain.server.errors import InvalidInput
from onnxplain.server.evaluation.cost import MAX_EXPLAINERS, ExplainerCost, check_explainer_count, evaluation_cost
from onnxplain.server.evaluation.metrics import METRICS, CostShape, MetricContext, metric_parameters
from onnxplain.server.methods.parameters import parse_parameters

IMAGE_SHAPE = (3, 20, 30)
OWN_PASS_METRICS = ["deletion", "insertion", "faithfulness_correlation", "infidelity", "max_sensitivity"]


class Counting:
    """Score and explain functions that count the rows and explanations a metric asks for."""

    def __init__(self, targets: int) -> None:
        self.targets = targets
        self.rows = 0
        self.explanations = 0
        self.rng = np.random.default_rng(0)

    def score(self, batch: np.ndarray) -> np.ndarray:
        self.rows += len(batch)
        return self.rng.random((len(batch), self.targets))

    def explain(self, image: np.ndarray) -> np.ndarray:
        self.explanations += 1
        return self.rng.random((self.targets, *IMAGE_SHAPE[1:])).astype(np.float32)


def params_for(names: list[str], **given: Any) -> dict[str, Any]:
    metrics = [METRICS[name] for name in names]
    return parse_parameters(metric_parameters(metrics), given, "metrics")


@pytest.mark.parametrize("name", OWN_PASS_METRICS)
@pytest.mark.parametrize("given", [{}, {"step": 7, "faithfulness_runs": 13, "infidelity_samples": 5}])
@pytest.mark.parametrize("targets", [1, 3])
def test_a_metric_declares_the_passes_it_makes(name: str, given: dict[str, Any], targets: int) -> None:
    counting = Counting(targets)
    rng = np.random.default_rng(1)
    maps = rng.random((targets, *IMAGE_SHAPE[1:])).astype(np.float32)
    context = MetricContext(
        image=rng.random(IMAGE_SHAPE).astype(np.float32),
        layout="NCHW",
        maps=maps,
        spatial_maps=maps,
        scorer=lambda space: counting.score,
        space=None,
        batch_size=4,
        rng=lambda metric: np.random.default_rng(2),
        explain=counting.explain,
    )
    metric = METRICS[name]
    known = {param.name for param in metric.parameters}
    params = params_for([name], **{key: value for key, value in given.items() if key in known})
    metric.compute(context, params)
    declared = metric.cost(CostShape(IMAGE_SHAPE[1:], targets), params)
    assert (declared.passes, declared.reruns) == (counting.rows, counting.explanations)


def test_the_total_adds_methods_metrics_and_re_runs() -> None:
    """Two images (28x28 with one target, 20x30 with three), a cascade of 4 steps, and two explainers: a method of
    100 and 250 passes, and client maps beside a method of 7 and 9 passes (which then only runs again)."""
    names = [*OWN_PASS_METRICS, "parameter_randomization", "pointing_game"]
    params = params_for(names, sensitivity_samples=3)
    shapes = [CostShape((28, 28), 1, cascade_steps=4), CostShape((20, 30), 3, cascade_steps=4)]
    explainers = [ExplainerCost([100, 250], explains=True), ExplainerCost([7, 9], explains=False)]
    cost = evaluation_cost(explainers, shapes, [METRICS[name] for name in names], params)
    # Deletion and insertion step a row of pixels at a time: 28 steps + 1 over 28x28, 20 + 1 over 20x30 (3 targets).
    causal = 2 * ((28 + 1) * 1 + (20 + 1) * 3)
    reruns = {"max_sensitivity": 3, "parameter_randomization": 4}
    rerun_passes = {name: count * ((1 + 100) + (1 + 250) + (1 + 7) + (1 + 9)) for name, count in reruns.items()}
    assert cost.parts == {
        "scoring": 2,
        "methods": 100 + 250,
        "deletion": causal,
        "insertion": causal,
        "faithfulness_correlation": 2 * 2 * (100 + 1),
        "infidelity": 2 * 2 * (10 + 1),
        **rerun_passes,
    }
    assert cost.total == 3758
    cost.check(3758 // 2)  # exactly the limit for two images
    with pytest.raises(InvalidInput) as refused:
        cost.check(3758 // 2 - 1)
    message = str(refused.value)
    assert "needs 3,758 forward passes" in message and "2 explainers on 2 images" in message
    assert "max_sensitivity 1,110" in message and "parameter_randomization 1,480" in message
    assert "allows 1,878 per image, 3,756 for 2 images" in message


def test_no_limit_refuses_nothing() -> None:
    cost = evaluation_cost([ExplainerCost([10**9], explains=True)], [CostShape((2, 2), 1)], [], {})
    cost.check(0)


def test_the_number_of_explainers_is_bounded() -> None:
    check_explainer_count(MAX_EXPLAINERS)
    with pytest.raises(InvalidInput, match=f"{MAX_EXPLAINERS + 1} explainers; the limit is {MAX_EXPLAINERS}"):
        check_explainer_count(MAX_EXPLAINERS + 1)
