"""VJP rules of elementwise activations and the unary math ops that decomposed exports use (pre-20 Gelu is
Div/Erf/Add/Mul, a decomposed LayerNorm is ReduceMean/Sub/Pow/Sqrt/Div).

Masks are Greater/Less/And applied by ctx.masked (no Equal: Equal-19 misses a CUDA kernel). Kinks follow torch's
backward: Relu, Clip, HardSigmoid and ThresholdedRelu are strict (0 at the kink), LeakyRelu, PRelu, Elu, Selu and
Celu take the negative piece's slope at 0, HardSwish takes the outer pieces' slopes (0 and 1) at ±3.
"""

from __future__ import annotations

import math

from onnxplain.server.engine.backward.context import BackwardContext
from onnxplain.server.engine.backward.rules.registry import ForwardNode, Gradients, vjp

_GELU_TANH_SCALE = math.sqrt(2.0 / math.pi)
_GELU_TANH_CUBIC = 0.044715
# Selu's ONNX defaults (float32 values of the constants of Klambauer et al.).
_SELU_ALPHA = 1.67326319217681884765625
_SELU_GAMMA = 1.05070102214813232421875


@vjp("Relu")
def relu(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    # Masking on the output (y > 0 exactly when x > 0) leaves x with one consumer, so ONNX Runtime still fuses
    # the Conv+Relu before it.
    y = node.outputs[0]
    return [ctx.masked(_compare(ctx, "Greater", y, 0.0), grads[0], y)]


@vjp("LeakyRelu")
def leaky_relu(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    x = node.inputs[0]
    return [_leaky(ctx, x, grads[0], ctx.scalar(node.attrs.get("alpha", 0.01), x))]


@vjp("PRelu")
def prelu(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    # The slope is a weight: only the input's gradient is needed.
    return [_leaky(ctx, node.inputs[0], grads[0], node.inputs[1]), None]


@vjp("Clip")
def clip(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """min and max are optional inputs (absent = unbounded); strict bounds, like torch's relu6/hardtanh."""
    x, low, high = node.input(0), node.input(1), node.input(2)
    masks = []
    if low:
        masks.append(ctx.op("Greater", [x, low]))
    if high:
        masks.append(ctx.op("Less", [x, high]))
    if not masks:
        return [grads[0], None, None]
    inside = masks[0] if len(masks) == 1 else ctx.op("And", masks)
    return [ctx.masked(inside, grads[0], x), None, None]


@vjp("ThresholdedRelu")
def thresholded_relu(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    x = node.inputs[0]
    return [ctx.masked(_compare(ctx, "Greater", x, node.attrs.get("alpha", 1.0)), grads[0], x)]


@vjp("Elu", "Selu", "Celu")
def exponential_linear(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """y = s·x for x > 0, y = a·(exp(x/c) - 1) otherwise, so the negative piece's slope is y/c + a/c: read off the
    output, no Exp. (s, a, c) = (1, alpha, 1) for Elu, (gamma, gamma·alpha, 1) for
    Selu, (1, alpha, alpha) for Celu."""
    x, y, g = node.inputs[0], node.outputs[0], grads[0]
    positive, amplitude, width = _exponential_linear_constants(node)
    negative_slope = ctx.op("Add", [_scaled(ctx, y, 1.0 / width), ctx.scalar(amplitude / width, y)])
    positive_grad = g if positive == 1.0 else _scaled(ctx, g, positive, like=x)
    return [ctx.op("Where", [_compare(ctx, "Greater", x, 0.0), positive_grad, ctx.op("Mul", [g, negative_slope])])]


def _exponential_linear_constants(node: ForwardNode) -> tuple[float, float, float]:
    if node.op_type == "Selu":
        alpha, gamma = node.attrs.get("alpha", _SELU_ALPHA), node.attrs.get("gamma", _SELU_GAMMA)
        return gamma, gamma * alpha, 1.0
    alpha = node.attrs.get("alpha", 1.0)
    return 1.0, alpha, alpha if node.op_type == "Celu" else 1.0


@vjp("Softplus")
def softplus(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    return [ctx.op("Mul", [grads[0], ctx.op("Sigmoid", [node.inputs[0]])])]


@vjp("Softsign")
def softsign(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """y = x/(1 + |x|): y' = 1/(1 + |x|)²."""
    x = node.inputs[0]
    denominator = _plus_one(ctx, ctx.op("Abs", [x]))
    return [ctx.op("Div", [grads[0], ctx.op("Mul", [denominator, denominator])])]


@vjp("Mish")
def mish(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """y = x·t, t = tanh(softplus(x)): y' = t + x·(1 - t²)·sigmoid(x). t is recomputed: y/x fails at x = 0."""
    x = node.inputs[0]
    t = ctx.op("Tanh", [ctx.op("Softplus", [x])])
    sech_squared = _one_minus(ctx, ctx.op("Mul", [t, t]), like=x)
    slope = ctx.op("Add", [t, ctx.op("Mul", [ctx.op("Mul", [x, sech_squared]), ctx.op("Sigmoid", [x])])])
    return [ctx.op("Mul", [grads[0], slope])]


@vjp("Sigmoid")
def sigmoid(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    y = node.outputs[0]
    return [ctx.op("Mul", [grads[0], ctx.op("Mul", [y, _one_minus(ctx, y)])])]


@vjp("Tanh")
def tanh(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    y = node.outputs[0]
    return [ctx.op("Mul", [grads[0], _one_minus(ctx, ctx.op("Mul", [y, y]), like=y)])]


@vjp("HardSigmoid")
def hard_sigmoid(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """y = clip(z, 0, 1), z = alpha·x + beta: alpha·g strictly inside, 0 elsewhere (torch exports alpha = 1/6)."""
    x = node.inputs[0]
    alpha, beta = node.attrs.get("alpha", 0.2), node.attrs.get("beta", 0.5)
    z = ctx.op("Add", [_scaled(ctx, x, alpha), ctx.scalar(beta, x)])
    inside = ctx.op("And", [_compare(ctx, "Greater", z, 0.0, like=x), _compare(ctx, "Less", z, 1.0, like=x)])
    return [ctx.masked(inside, _scaled(ctx, grads[0], alpha, like=x), x)]


@vjp("HardSwish")
def hard_swish(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """y = x·clip(x/3 + 1/2, 0, 1): slope x/3 + 1/2 strictly inside (-3, 3), the outer pieces' 0 and 1 at the ends,
    as torch's backward (checked on torch 2.13)."""
    x, g = node.inputs[0], grads[0]
    middle_slope = ctx.op("Add", [ctx.op("Div", [x, ctx.scalar(3.0, x)]), ctx.scalar(0.5, x)])
    below_three = ctx.op("Where", [_compare(ctx, "Less", x, 3.0), ctx.op("Mul", [g, middle_slope]), g])
    return [ctx.masked(_compare(ctx, "Greater", x, -3.0), below_three, x)]


@vjp("Erf")
def erf(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    x = node.inputs[0]
    bell = ctx.op("Exp", [ctx.op("Neg", [ctx.op("Mul", [x, x])])])
    return [ctx.op("Mul", [grads[0], _scaled(ctx, bell, 2.0 / math.sqrt(math.pi), like=x)])]


@vjp("Gelu")
def gelu(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    x = node.inputs[0]
    tanh_form = node.attrs.get("approximate", "none") == "tanh"
    slope = _gelu_tanh_slope(ctx, x) if tanh_form else _gelu_exact_slope(ctx, x)
    return [ctx.op("Mul", [grads[0], slope])]


def _gelu_exact_slope(ctx: BackwardContext, x: str) -> str:
    """d/dx x·Φ(x) = Φ(x) + x·φ(x)."""
    erf_term = ctx.op("Erf", [_scaled(ctx, x, 1.0 / math.sqrt(2.0))])
    cdf = _scaled(ctx, ctx.op("Add", [erf_term, ctx.scalar(1.0, x)]), 0.5, like=x)
    bell = ctx.op("Exp", [_scaled(ctx, ctx.op("Mul", [x, x]), -0.5, like=x)])
    density = _scaled(ctx, bell, 1.0 / math.sqrt(2.0 * math.pi), like=x)
    return ctx.op("Add", [cdf, ctx.op("Mul", [x, density])])


def _gelu_tanh_slope(ctx: BackwardContext, x: str) -> str:
    """y = ½x(1 + t), t = tanh(k(x + c·x³)): y' = ½(1 + t) + ½x(1 - t²)·k(1 + 3c·x²)."""
    square = ctx.op("Mul", [x, x])

    def scaled_polynomial(cubic: float) -> str:  # k·(1 + cubic·x²)
        return _scaled(ctx, _plus_one(ctx, _scaled(ctx, square, cubic, like=x), like=x), _GELU_TANH_SCALE, like=x)

    t = ctx.op("Tanh", [ctx.op("Mul", [x, scaled_polynomial(_GELU_TANH_CUBIC)])])
    sech_squared = _one_minus(ctx, ctx.op("Mul", [t, t]), like=x)
    inner = ctx.op("Mul", [ctx.op("Mul", [x, sech_squared]), scaled_polynomial(3 * _GELU_TANH_CUBIC)])
    return _scaled(ctx, ctx.op("Add", [_plus_one(ctx, t, like=x), inner]), 0.5, like=x)


@vjp("Exp")
def exp(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    return [ctx.op("Mul", [grads[0], node.outputs[0]])]


@vjp("Sqrt")
def sqrt(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    y = node.outputs[0]
    return [ctx.op("Div", [grads[0], _scaled(ctx, y, 2.0)])]


@vjp("Reciprocal")
def reciprocal(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    y = node.outputs[0]
    return [ctx.op("Neg", [ctx.op("Mul", [grads[0], ctx.op("Mul", [y, y])])])]


@vjp("Pow")
def power(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """x^p with a constant exponent p (a decomposed LayerNorm's square): g·p·x^(p-1)."""
    x, exponent = node.inputs
    p = ctx.value(exponent)
    if p is None or ctx.needs(exponent):
        raise NotImplementedError("Pow is differentiated only with respect to its base, with a constant exponent")
    slope = ctx.op("Mul", [ctx.op("Pow", [x, ctx.constant(p - 1, like=x)]), ctx.constant(p, like=x)])
    return [ctx.unbroadcast(ctx.op("Mul", [grads[0], slope]), x, node.outputs[0]), None]


def _leaky(ctx: BackwardContext, x: str, grad: str, slope: str) -> str:
    """g where x > 0, slope·g elsewhere (x = 0 included, as torch)."""
    return ctx.op("Where", [_compare(ctx, "Greater", x, 0.0), grad, ctx.op("Mul", [grad, slope])])


# Helpers: `like` names a forward tensor of the right dtype where the operand is a new backward tensor.


def _compare(ctx: BackwardContext, op_type: str, tensor: str, bound: float, like: str | None = None) -> str:
    return ctx.op(op_type, [tensor, ctx.scalar(bound, like or tensor)])


def _scaled(ctx: BackwardContext, tensor: str, factor: float, like: str | None = None) -> str:
    return ctx.op("Mul", [tensor, ctx.scalar(factor, like or tensor)])


def _plus_one(ctx: BackwardContext, tensor: str, like: str | None = None) -> str:
    return ctx.op("Add", [tensor, ctx.scalar(1.0, like or tensor)])


def _one_minus(ctx: BackwardContext, tensor: str, like: str | None = None) -> str:
    return ctx.op("Sub", [ctx.scalar(1.0, like or tensor), tensor])
