"""Layer-wise relevance propagation (Bach et al. 2015) as one modified backward pass: the rule set of a Zennit-style
composite (engine/backward/rulesets/lrp) swaps the rules of linear layers, activations, sums and pooling, after
folding BatchNormalization into the layer before it. Relevance starts at the target's score (f_c on the target, as
Captum starts it), so it sums approximately to the score. Input-shaped."""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxplain.server.engine.backward.rulesets import (
    COMPOSITE_NAMES,
    DEFAULT_COMPOSITE,
    composite_parameters,
    get_ruleset,
)
from onnxplain.server.engine.backward.support import RELEVANCE
from onnxplain.server.engine.gradients import BackwardSpec
from onnxplain.server.errors import InvalidInput
from onnxplain.server.methods.base import Attribution, ExplainJob, Family
from onnxplain.server.methods.gradient_base import GradientMethod, input_bounds, target_gradients
from onnxplain.server.methods.parameters import Param, choice
from onnxplain.server.methods.registry import register


@register
class Lrp(GradientMethod):
    name = "lrp"
    family: Family = "relevance"
    single_pass = True
    walks = (RELEVANCE,)
    description = "LRP with a Zennit-style composite; 'deep_taylor' is the z+ preset, 'epsilon' Captum's default."
    parameters = (
        Param("composite", "str", DEFAULT_COMPOSITE, f"One of {', '.join(COMPOSITE_NAMES)}.", choice(*COMPOSITE_NAMES)),
        Param("epsilon", "float", None, "Stabiliser of the epsilon rule (composite default when unset)."),
        Param("gamma", "float", None, "Weight of the positive weights in the gamma rule."),
        Param("alpha", "float", None, "Alpha of the alpha-beta composite (alpha - beta = 1)."),
        Param("beta", "float", None, "Beta of the alpha-beta composite."),
        Param("low", "float", None, "Lowest input value for the z-box input rule (default: from preprocessing)."),
        Param("high", "float", None, "Highest input value for the z-box input rule."),
    )

    def spec(self, job: ExplainJob, params: dict[str, Any]) -> BackwardSpec:
        composite = params["composite"]
        takes = composite_parameters(composite)
        given = {name: params[name] for name in takes if params[name] is not None}
        ignored = sorted(
            name for name, value in params.items() if value is not None and name not in (*takes, "composite")
        )
        if ignored:
            raise InvalidInput(f"LRP composite {composite!r} does not take {', '.join(ignored)}")
        if "low" in takes and "low" not in given and "high" not in given:
            given["low"], given["high"] = input_bounds(job)
        try:
            ruleset = get_ruleset("lrp", composite=composite, **given)
        except ValueError as error:
            raise InvalidInput(str(error)) from error
        params.update(given)
        return BackwardSpec(ruleset=ruleset, probability=job.scorer.space == "probability")

    def attribute(self, job: ExplainJob, params: dict[str, Any]) -> Attribution:
        result = target_gradients(job, self.spec(job, params))
        targets = job.scorer.targets
        scores = result.scores[np.arange(len(targets)), targets].reshape(-1, *([1] * job.image.ndim))
        return Attribution(result.input_gradient * scores)
