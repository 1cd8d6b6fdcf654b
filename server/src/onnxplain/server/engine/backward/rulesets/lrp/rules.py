"""LRP rules as VJP rules: the walk carries relevance R where the plain gradient flows, and each rule maps the
relevance of a node's output to its inputs.

A linear layer (Conv, ConvTranspose, Gemm, MatMul with constant weights) sends back a sum of terms
a ⊙ VJP_W'(R / stab(z)): the registry's own VJP of the layer run with modified weights W', applied to the relevance
divided by a (modified) forward output z, times a (modified) input a. Modified weights are initializers computed
here; modified outputs are extra forward nodes. A rule's numbers (epsilon, gamma, alpha, beta, bounds) are constants
or Parameters (graph inputs fed at run time, context.py): a Parameter keeps one graph for every value, and a rule
whose graph would change with a value (alpha-beta with beta = 0 is z⁺) is chosen by the composite before the build.
The formulas, and which parameters each rule clamps, zeroes or squares (biases included), are those of Zennit 0.5.1
(`zennit/rules.py`), with its stabiliser z + ε·sign(z), sign(0) = +1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from onnx import helper

from onnxplain.server.engine.backward.context import BackwardContext, Number, Parameter, UnknownShape
from onnxplain.server.engine.backward.rules import ForwardNode, Rule, rule_for
from onnxplain.server.engine.backward.rules.registry import Gradients
from onnxplain.server.engine.backward.signs import at_least_zero


def _plain(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    rule = rule_for(node.op_type)
    if rule is None:
        raise NotImplementedError(f"no gradient rule for {node.op_type} to carry relevance through")
    return rule(ctx, node, grads)


def _divided(
    ctx: BackwardContext, relevance: str, z: str, epsilon: Number, like: str, z_never_negative: bool = False
) -> str:
    """R / (z + ε·sign(z)) with sign(0) = +1, written with Where so that no Sign (Sign(0) = 0) or Equal is emitted;
    R / (z + ε) when z is known to be >= 0 (the same value, without two passes over z)."""
    if z_never_negative:
        return ctx.op("Div", [relevance, ctx.op("Add", [z, ctx.number(epsilon, like)])])
    if isinstance(epsilon, Parameter):
        up = ctx.parameter(epsilon, like)
        down = ctx.op("Neg", [up])
    else:
        up, down = ctx.scalar(epsilon, like), ctx.scalar(-epsilon, like)
    shift = ctx.op("Where", [ctx.op("GreaterOrEqual", [z, ctx.scalar(0.0, like)]), up, down])
    return ctx.op("Div", [relevance, ctx.op("Add", [z, shift])])


@dataclass(frozen=True)
class _Layer:
    """A linear node whose weight (and bias) are constants, seen as Zennit sees a module: input, weight, bias."""

    node: ForwardNode
    weight: np.ndarray
    bias: np.ndarray | None
    attrs: dict[str, Any] = field(default_factory=dict)
    # Whether `weight` and `bias` are the node's own tensors (not a Gemm's alpha·B, beta·C).
    own_parameters: bool = True

    @classmethod
    def of(cls, ctx: BackwardContext, node: ForwardNode) -> _Layer | None:
        """None when the weight is computed at run time (a MatMul of two activations): such a node is no layer with
        parameters, and keeps its plain gradient as Zennit's functional ops do."""
        weight, bias_name = ctx.value(node.input(1)), node.input(2)
        bias = ctx.value(bias_name) if bias_name else None
        if weight is None or (bias_name and bias is None) or not ctx.needs(node.input(0)):
            return None
        attrs = dict(node.attrs)
        own = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0
        if node.op_type == "Gemm":
            # The rules modify the effective weight alpha·B and bias beta·C, as Zennit modifies a Linear's parameters.
            weight = weight * attrs.get("alpha", 1.0)
            bias = None if bias is None else bias * attrs.get("beta", 1.0)
            attrs.update(alpha=1.0, beta=1.0)
        return cls(node, weight, bias, attrs, own)

    @property
    def input(self) -> str:
        return self.node.input(0)

    @property
    def output(self) -> str:
        return self.node.outputs[0]

    def constant(self, ctx: BackwardContext, value: np.ndarray | None) -> str | None:
        return None if value is None else ctx.constant(value, like=self.node.input(1), hint="lrp_param")

    def parameter(self, ctx: BackwardContext, index: int) -> str | None:
        """The weight (index 1) or bias (2) as a tensor: the node's own where it is the effective one."""
        if self.own_parameters:
            return self.node.input(index) or None
        return self.constant(ctx, self.weight if index == 1 else self.bias)

    def forward(self, ctx: BackwardContext, x: str, weight: str, bias: str | None) -> str:
        """One more forward node: the layer applied to `x` with parameters `weight` and `bias`."""
        inputs = [x, weight] if bias is None else [x, weight, bias]
        return ctx.op(self.node.op_type, inputs, hint="lrp_forward", **self.attrs)

    def vjp(self, ctx: BackwardContext, grad: str, weight: str | None = None) -> str:
        """(∂layer/∂x)ᵀ·grad: the registry's rule, on the node itself or with `weight` swapped in."""
        node = self.node
        if weight is not None:
            proto = helper.make_node(node.op_type, [self.input, weight], node.outputs, name=node.name, **self.attrs)
            node = ForwardNode.of(proto)
        return _plain(ctx, node, [grad])[0]

    def sample(self, ctx: BackwardContext, value: Number = 1.0) -> str:
        """An input of batch size 1 filled with `value` (a Parameter: broadcast over the channel axis when it holds one
        value per channel): the rules whose modified input does not depend on x broadcast it over the batch."""
        shape = ctx.shape(self.input)
        if shape is None or any(d is None for d in shape[1:]):
            raise UnknownShape(self.input, shape)
        sample = (1, *shape[1:])
        if not isinstance(value, Parameter):
            return ctx.constant(np.full(sample, value), like=self.input, hint="lrp_sample")
        bound = ctx.parameter(value, self.input)
        if value.value.ndim == 1:
            if value.value.size != sample[1]:
                count = value.value.size
                raise ValueError(f"{count} per-channel input bounds for {sample[1]} channels of {self.input!r}")
            bound = ctx.op("Reshape", [bound, ctx.ints([1, -1, *([1] * (len(sample) - 2))])])
        return ctx.op("Expand", [bound, ctx.ints(sample)], hint="lrp_sample")


def _layer_rule(propagate: Callable[[BackwardContext, _Layer, str], str]) -> Rule:
    """A rule for linear layers from the function that maps a layer's output relevance to its input relevance."""

    def rule(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
        layer = _Layer.of(ctx, node)
        if layer is None or grads[0] is None:
            return _plain(ctx, node, grads)
        return [propagate(ctx, layer, grads[0]), *([None] * (len(node.inputs) - 1))]

    return rule


def _split_inputs(ctx: BackwardContext, layer: _Layer) -> tuple[str, str | None]:
    """x⁺ = max(x, 0) and x⁻ = min(x, 0) = x - x⁺; x⁻ is None when x is never negative (a ReLU's output), where its
    half of a rule would add exact zeros at the cost of a forward and a VJP of the layer."""
    if ctx.never_negative(layer.input):
        return layer.input, None
    positive = ctx.op("Relu", [layer.input])
    return positive, ctx.op("Sub", [layer.input, positive])


def _signed_share(
    ctx: BackwardContext,
    layer: _Layer,
    relevance: str,
    inputs: tuple[str, str | None],
    weights: tuple[str, str],
    bias: str | None,
    stabilizer: Number,
    mask: str | None = None,
) -> str:
    """x⁺ ⊙ VJP_W₁(s) + x⁻ ⊙ VJP_W₂(s), s = R / stab(layer(x⁺; W₁, b) + layer(x⁻; W₂)) (masked where given): the part
    of the alpha-beta, z⁺ and gamma rules that each of their two (positive, negative) halves repeats. Without x⁻
    (a non-negative input) its terms are exact zeros and are left out."""
    (positive, negative), (first, second) = inputs, weights
    z = layer.forward(ctx, positive, first, bias)
    if negative is not None:
        z = ctx.op("Add", [z, layer.forward(ctx, negative, second, None)])
    share = _divided(ctx, relevance, z, stabilizer, layer.input, _never_negative_sum(ctx, negative, weights, bias))
    if mask is not None:
        share = ctx.op("Where", [mask, share, ctx.scalar(0.0, layer.input)])
    from_positive = ctx.op("Mul", [positive, layer.vjp(ctx, share, first)])
    if negative is None:
        return from_positive
    return ctx.op("Add", [from_positive, ctx.op("Mul", [negative, layer.vjp(ctx, share, second)])])


def _never_negative_sum(ctx: BackwardContext, negative: str | None, weights: tuple[str, str], bias: str | None) -> bool:
    """Whether z = layer(x⁺; W₁, b) + layer(x⁻; W₂) is >= 0 for every input: W₁ >= 0, b >= 0 and W₂ <= 0 (z⁺'s
    positive half). Sums of non-negative products round to non-negative floats, so the check is exact."""
    first, second = (ctx.value(name) for name in weights)
    return (
        at_least_zero(first)
        and (bias is None or at_least_zero(ctx.value(bias)))
        and (negative is None or (second is not None and at_least_zero(-second)))
    )


def _clamped(value: np.ndarray | None, positive: bool) -> np.ndarray | None:
    if value is None:
        return None
    return np.maximum(value, 0) if positive else np.minimum(value, 0)


def epsilon(eps: Number) -> Rule:
    """R_x = x ⊙ VJP(R / stab_ε(y)) (Zennit Epsilon): z is the layer's own output, bias included."""

    def propagate(ctx: BackwardContext, layer: _Layer, relevance: str) -> str:
        share = _divided(ctx, relevance, layer.output, eps, layer.input)
        return ctx.op("Mul", [layer.input, layer.vjp(ctx, share)])

    return _layer_rule(propagate)


def alpha_beta(alpha: Number, beta: Number, stabilizer: Number) -> Rule:
    """alpha·(positive contributions) - beta·(negative ones) (Zennit AlphaBeta): x⁺ through W⁺ with b⁺ plus x⁻
    through W⁻ make the positive part, x⁺ through W⁻ with b⁻ plus x⁻ through W⁺ the negative one. alpha = 1, beta = 0
    (constants) is z⁺, without the negative part; Parameters always build both parts."""
    positive_only = not isinstance(beta, Parameter) and beta == 0

    def propagate(ctx: BackwardContext, layer: _Layer, relevance: str) -> str:
        inputs = _split_inputs(ctx, layer)
        w_pos = layer.constant(ctx, _clamped(layer.weight, positive=True))
        w_neg = layer.constant(ctx, _clamped(layer.weight, positive=False))
        b_pos = layer.constant(ctx, _clamped(layer.bias, positive=True))
        positive = _signed_share(ctx, layer, relevance, inputs, (w_pos, w_neg), b_pos, stabilizer)
        if positive_only:
            return positive if alpha == 1 else ctx.op("Mul", [positive, ctx.number(alpha, layer.input)])
        b_neg = layer.constant(ctx, _clamped(layer.bias, positive=False))
        negative = _signed_share(ctx, layer, relevance, inputs, (w_neg, w_pos), b_neg, stabilizer)
        return ctx.op(
            "Sub",
            [
                ctx.op("Mul", [positive, ctx.number(alpha, layer.input)]),
                ctx.op("Mul", [negative, ctx.number(beta, layer.input)]),
            ],
        )

    return _layer_rule(propagate)


def z_plus(stabilizer: Number) -> Rule:
    """Zennit ZPlus: alpha-beta with alpha = 1, beta = 0; negative inputs go through W⁻."""
    return alpha_beta(1.0, 0.0, stabilizer)


def gamma(factor: Number, stabilizer: Number) -> Rule:
    """Zennit's generalised Gamma: W + gamma·W⁺ / W + gamma·W⁻ (biases likewise) on x⁺ / x⁻, the positive half where
    y > 0, the negative half where y < 0. With gamma a Parameter the raised weights are computed in the graph, in the
    same float32 steps (W⁺ times gamma, plus W)."""

    def propagate(ctx: BackwardContext, layer: _Layer, relevance: str) -> str:
        def raised(index: int, positive: bool) -> str | None:
            value = layer.weight if index == 1 else layer.bias
            if value is None:
                return None
            clamped = _clamped(value, positive)
            if not isinstance(factor, Parameter):
                return layer.constant(ctx, value + factor * clamped)
            scaled = ctx.op("Mul", [ctx.parameter(factor, layer.node.input(1)), layer.constant(ctx, clamped)])
            return ctx.op("Add", [layer.parameter(ctx, index), scaled])

        inputs = _split_inputs(ctx, layer)
        w_up, w_down = raised(1, True), raised(1, False)
        zero = ctx.scalar(0.0, layer.input)
        above = ctx.op("Greater", [layer.output, zero])
        below = ctx.op("Less", [layer.output, zero])
        return ctx.op(
            "Add",
            [
                _signed_share(ctx, layer, relevance, inputs, (w_up, w_down), raised(2, True), stabilizer, above),
                _signed_share(ctx, layer, relevance, inputs, (w_down, w_up), raised(2, False), stabilizer, below),
            ],
        )

    return _layer_rule(propagate)


def z_box(low: Parameter, high: Parameter, stabilizer: Number) -> Rule:
    """Zennit ZBox for inputs bounded by [low, high] (each a scalar or one value per channel, fed at run time):
    z = layer(x; W, b) - layer(l; W⁺, b⁺) - layer(h; W⁻, b⁻), R_x = x ⊙ VJP_W(s) - l ⊙ VJP_W⁺(s) - h ⊙ VJP_W⁻(s)."""

    def propagate(ctx: BackwardContext, layer: _Layer, relevance: str) -> str:
        lows, highs = layer.sample(ctx, low), layer.sample(ctx, high)
        w_pos = layer.constant(ctx, _clamped(layer.weight, positive=True))
        w_neg = layer.constant(ctx, _clamped(layer.weight, positive=False))
        b_pos = layer.constant(ctx, _clamped(layer.bias, positive=True))
        b_neg = layer.constant(ctx, _clamped(layer.bias, positive=False))
        bounds = ctx.op("Add", [layer.forward(ctx, lows, w_pos, b_pos), layer.forward(ctx, highs, w_neg, b_neg)])
        share = _divided(ctx, relevance, ctx.op("Sub", [layer.output, bounds]), stabilizer, layer.input)
        from_bounds = ctx.op(
            "Add",
            [
                ctx.op("Mul", [lows, layer.vjp(ctx, share, w_pos)]),
                ctx.op("Mul", [highs, layer.vjp(ctx, share, w_neg)]),
            ],
        )
        return ctx.op("Sub", [ctx.op("Mul", [layer.input, layer.vjp(ctx, share)]), from_bounds])

    return _layer_rule(propagate)


def _input_free(stabilizer: Number, modified: Callable[[np.ndarray], np.ndarray], keep_bias: bool) -> Rule:
    """The rules that spread relevance by modified weights alone: z = layer(1; W', b'), R_x = VJP_W'(R / stab(z))."""

    def propagate(ctx: BackwardContext, layer: _Layer, relevance: str) -> str:
        weight = layer.constant(ctx, modified(layer.weight))
        bias = layer.constant(ctx, modified(layer.bias)) if keep_bias and layer.bias is not None else None
        z = layer.forward(ctx, layer.sample(ctx), weight, bias)
        return layer.vjp(ctx, _divided(ctx, relevance, z, stabilizer, layer.input), weight)

    return _layer_rule(propagate)


def flat(stabilizer: Number) -> Rule:
    """Zennit Flat: all weights one, bias zero."""
    return _input_free(stabilizer, np.ones_like, keep_bias=False)


def w_square(stabilizer: Number) -> Rule:
    """Zennit WSquare: weights squared, and the bias squared too (Zennit's ParamMod squares every parameter)."""
    return _input_free(stabilizer, np.square, keep_bias=True)


# Rules for the non-linear and parameter-free ops.


def pass_through(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """Zennit Pass: relevance goes to the first input unchanged (activations, BatchNormalization left unfolded)."""
    return [grads[0], *([None] * (len(node.inputs) - 1))]


def norm(stabilizer: Number) -> Rule:
    """Zennit Norm: R_i = x_i ⊙ VJP_i(R / stab(y)), the epsilon rule of a parameter-free linear op (sums, averages)."""

    def rule(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
        share = _divided(ctx, grads[0], node.outputs[0], stabilizer, node.input(0))
        input_grads = _plain(ctx, node, [share])
        return [None if g is None else ctx.op("Mul", [x, g]) for x, g in zip(node.inputs, input_grads, strict=False)]

    return rule


def residual_norm(stabilizer: Number) -> Rule:
    """Add: Norm for a sum of two activations (residual connections, Zennit's Sum canonizer); an Add of a constant
    (a bias) passes relevance unchanged, as the plain gradient does."""
    normalised = norm(stabilizer)

    def rule(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
        if all(ctx.needs(name) for name in node.inputs):
            return normalised(ctx, node, grads)
        return _plain(ctx, node, grads)

    return rule


def gate(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """Mul: all relevance to the activation the product is shaped like; a broadcast gate (squeeze-excite) or a constant
    factor receives none. Equal shapes (x·sigmoid(x)): the first operand, which gets what the other branch would pass
    on anyway."""
    candidates = [i for i, name in enumerate(node.inputs) if ctx.needs(name)]
    receiver = max(candidates, key=lambda i: _elements(ctx, node.inputs[i]))
    return [
        ctx.unbroadcast(grads[0], name, node.outputs[0]) if i == receiver else None
        for i, name in enumerate(node.inputs)
    ]


def numerator(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """Div: all relevance to the numerator; the divisor (a constant, or a normaliser) is treated as a gate."""
    if not ctx.needs(node.input(0)):
        return _plain(ctx, node, grads)
    return [ctx.unbroadcast(grads[0], node.input(0), node.outputs[0]), None]


def _elements(ctx: BackwardContext, name: str) -> int:
    shape: Sequence[int | None] | None = ctx.shape(name)
    if shape is None:
        raise UnknownShape(name, None)
    return math.prod(d or 1 for d in shape)
