"""Every attribution method by its API name. A method registers itself with @register; unknown names fail loudly."""

from __future__ import annotations

from onnxplain.server.errors import InvalidInput
from onnxplain.server.methods.base import AttributionMethod
from onnxplain.server.observability.names import shortened

METHODS: dict[str, AttributionMethod] = {}


def register(method_class: type[AttributionMethod]) -> type[AttributionMethod]:
    if method_class.name in METHODS:
        raise ValueError(f"method {method_class.name!r} is registered twice")
    METHODS[method_class.name] = method_class()
    return method_class


def get_method(name: str) -> AttributionMethod:
    try:
        return METHODS[name]
    except KeyError:
        raise InvalidInput(f"unknown method {shortened(name)!r}; available: {', '.join(sorted(METHODS))}") from None


def _register_builtin_methods() -> None:
    # Imported for their @register side effect; one line per method module.
    from onnxplain.server.methods import (  # noqa: F401
        cam,
        clear,
        feature_ablation,
        feature_visualization,
        gradient,
        guided_grad_cam,
        integrated_gradients,
        kernel_shap,
        lime,
        lrp,
        occlusion,
        prediction_difference,
        relu_variants,
        rise,
        score_cam,
        signed_saliency,
        smoothgrad,
    )


_register_builtin_methods()
