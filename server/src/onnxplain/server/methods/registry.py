"""Every attribution method by its API name. A method registers itself with @register; unknown names fail loudly."""

from __future__ import annotations

from onnxplain.server.errors import InvalidInput
from onnxplain.server.methods.base import AttributionMethod

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
        raise InvalidInput(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}") from None


def _register_builtin_methods() -> None:
    # Imported for their @register side effect; one line per method module.
    from onnxplain.server.methods import (
        feature_ablation,  # noqa: F401
        kernel_shap,  # noqa: F401
        lime,  # noqa: F401
        occlusion,  # noqa: F401
        prediction_difference,  # noqa: F401
        rise,  # noqa: F401
    )


_register_builtin_methods()
