"""Method parameters: declared once per method, checked here, so every bad value gets a message naming it."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from onnxplain.server.errors import InvalidInput
from onnxplain.server.observability.names import shortened

# No parameter means anything beyond this; larger values only overflow int64 fields or float arithmetic downstream.
MAX_MAGNITUDE = 1e15
Kind = Literal["int", "float", "bool", "str", "pair", "float_or_str"]
Check = Callable[[Any], str | None]


@dataclass(frozen=True)
class Param:
    """One parameter: its type, its default (None = chosen by the method from the image) and a check that
    returns an error message or None."""

    name: str
    kind: Kind
    default: Any
    description: str
    check: Check | None = None


def parse_parameters(specs: Sequence[Param], raw: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """Checked values of `raw` with defaults filled in; `owner` names whose parameters they are in messages."""
    known = {spec.name: spec for spec in specs}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        names = ", ".join(known) or "none"
        given = shortened(", ".join(unknown))
        raise InvalidInput(f"unknown parameter(s) {given} for {owner}; its parameters: {names}")
    values = {}
    for spec in specs:
        if spec.name not in raw:
            values[spec.name] = spec.default
            continue
        value = _coerce(spec, raw[spec.name])
        problem = spec.check(value) if spec.check else None
        if problem:
            raise InvalidInput(f"parameter {spec.name!r}: {problem}")
        values[spec.name] = value
    return values


def positive(value: Any) -> str | None:
    values = value if isinstance(value, tuple) else (value,)
    return None if all(v > 0 for v in values) else f"must be positive, got {_show(value)}"


def at_least(minimum: float) -> Check:
    def check(value: Any) -> str | None:
        return None if value >= minimum else f"must be at least {minimum}, got {_show(value)}"

    return check


def at_most(maximum: float) -> Check:
    """Positive and at most `maximum`: a cap on samples or runs that each cost passes."""

    def check(value: Any) -> str | None:
        return positive(value) or (None if value <= maximum else f"must be at most {maximum}, got {_show(value)}")

    return check


def choice(*options: str) -> Check:
    """A text parameter that must be one of `options`."""

    def check(value: Any) -> str | None:
        return None if value in options else f"must be one of {', '.join(options)}, got {_show(value)}"

    return check


def one_of(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, str) and value not in choices:
            return f"must be a number or one of {', '.join(choices)}, got {_show(value)}"
        return None

    return check


def _coerce(spec: Param, value: Any) -> Any:
    try:
        return _COERCE[spec.kind](value)
    except (TypeError, ValueError) as error:
        raise InvalidInput(f"parameter {spec.name!r}: {error}") from error


def _to_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise ValueError(f"must be an integer, got {_show(value)}")
    if abs(value) > MAX_MAGNITUDE:
        raise ValueError(f"must be at most {MAX_MAGNITUDE:.0e} in magnitude, got {_show(value)}")
    return int(value)


def _to_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {_show(value)}")
    if abs(value) > MAX_MAGNITUDE:
        raise ValueError(f"must be at most {MAX_MAGNITUDE:.0e} in magnitude, got {_show(value)}")
    return float(value)


def _to_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {_show(value)}")
    return value


def _to_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be text, got {_show(value)}")
    return value


def _to_pair(value: Any) -> tuple[int, int]:
    """An (height, width) pair from one integer or a list of one or two."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(values) not in (1, 2):
        raise ValueError(f"must be one integer or two (height, width), got {len(values)} values")
    ints = [_to_int(v) for v in values]
    return (ints[0], ints[-1])


def _to_float_or_str(value: Any) -> float | str:
    return value if isinstance(value, str) else _to_float(value)


_COERCE: dict[Kind, Callable[[Any], Any]] = {
    "int": _to_int,
    "float": _to_float,
    "bool": _to_bool,
    "str": _to_str,
    "pair": _to_pair,
    "float_or_str": _to_float_or_str,
}


def _show(value: Any) -> str:
    """A value as messages echo it: a caller's text or list is cut to a bounded length."""
    if isinstance(value, tuple):
        return "x".join(str(v) for v in value)
    return shortened(repr(value))
