"""Parsers for command-line values: `--param key=value` and `--target`, as argparse `type=` functions."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence

from onnxplain.client.parameters import ParameterValue
from onnxplain.client.targets import TargetLike, TargetsLike, TopK

_TOP_K = re.compile(r"top(\d+)", re.IGNORECASE)


def parse_param(text: str) -> tuple[str, ParameterValue]:
    """`window=4,4` -> ("window", [4, 4]); values read as true/false, a number list, an int, a float, else text."""
    name, separator, value = text.partition("=")
    if not separator or not name.strip():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return name.strip(), parse_param_value(value)


def parse_param_value(text: str) -> ParameterValue:
    """A comma makes a number list (`4,` is a list of one); a list with a non-number in it stays text."""
    if text.strip().lower() in ("true", "false"):
        return text.strip().lower() == "true"
    if "," in text:
        parts = [part for part in text.split(",") if part.strip()]
        numbers = [_number(part) for part in parts]
        if parts and all(number is not None for number in numbers):
            return [number for number in numbers if number is not None]
        return text
    number = _number(text)
    return text if number is None else number


def parse_target(text: str) -> TargetLike:
    """`top3` -> TopK(3), `281` -> class index 281, anything else -> a label name."""
    text = text.strip()
    if not text:
        raise argparse.ArgumentTypeError("empty target")
    top_k = _TOP_K.fullmatch(text)
    if top_k:
        if int(top_k.group(1)) < 1:
            raise argparse.ArgumentTypeError(f"{text!r}: top-k needs k >= 1")
        return TopK(int(top_k.group(1)))
    try:
        return int(text)
    except ValueError:
        return text


def targets_argument(targets: Sequence[TargetLike] | None) -> TargetsLike:
    """One plain --target gives (H, W) maps like the library's scalar target; several (or topK) give (T, H, W)."""
    if not targets:
        return None
    if len(targets) == 1 and not isinstance(targets[0], TopK):
        return targets[0]
    return list(targets)


def _number(text: str) -> int | float | None:
    for kind in (int, float):
        try:
            return kind(text.strip())
        except ValueError:
            pass
    return None
