"""Method parameters: Python values to the wire Parameter oneof and back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Real
from typing import TypeAlias

import numpy as np

from onnxplain.client.errors import InvalidArgumentError
from onnxplain.v1 import explain_service_pb2 as pb

ParameterValue: TypeAlias = bool | int | float | str | Sequence[float]
"""bool -> flag, int -> integer, float -> number, str -> text, a sequence of numbers -> numbers."""


def to_parameter(name: str, value: object) -> pb.Parameter:
    """bool is checked before int because bool is an int subclass; numpy scalars count as their Python kinds."""
    if isinstance(value, (bool, np.bool_)):
        return pb.Parameter(flag=bool(value))
    if isinstance(value, (int, np.integer)):
        return pb.Parameter(integer=int(value))
    if isinstance(value, (float, np.floating)):
        return pb.Parameter(number=float(value))
    if isinstance(value, str):
        return pb.Parameter(text=value)
    numbers = _as_numbers(value)
    if numbers is not None:
        return pb.Parameter(numbers=pb.NumberList(values=numbers))
    raise InvalidArgumentError(
        f"parameter {name!r}: cannot send a {type(value).__name__}; use a bool, int, float, str or a "
        "sequence of numbers"
    )


def to_parameters(params: Mapping[str, object]) -> dict[str, pb.Parameter]:
    return {name: to_parameter(name, value) for name, value in params.items()}


def from_parameter(parameter: pb.Parameter) -> ParameterValue | None:
    kind = parameter.WhichOneof("value")
    if kind == "numbers":
        return list(parameter.numbers.values)
    return None if kind is None else getattr(parameter, kind)


def from_parameters(parameters: Mapping[str, pb.Parameter]) -> dict[str, ParameterValue | None]:
    """Sorted by name, so printed parameters read the same on every call."""
    return {name: from_parameter(parameters[name]) for name in sorted(parameters)}


def _as_numbers(value: object) -> list[float] | None:
    if isinstance(value, np.ndarray):
        if value.ndim == 1 and value.dtype.kind in "iuf":
            return [float(number) for number in value]
        return None
    if isinstance(value, (list, tuple)) and all(_is_number(item) for item in value):
        return [float(number) for number in value]
    return None


def _is_number(value: object) -> bool:
    return isinstance(value, (Real, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
