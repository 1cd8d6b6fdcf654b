"""Waiting for a condition instead of for a time: tests run on busy machines, where any fixed pause can be too short.

The timeout is a ceiling that only a broken server or client reaches, never the measure of a verdict.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

CEILING_SECONDS = 60.0
_POLL_SECONDS = 0.02


def wait_until(condition: Callable[[], T], timeout: float = CEILING_SECONDS, what: str = "the condition") -> T:
    """The condition's first truthy value; an AssertionError naming `what` if none came within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what} was not reached within {timeout:.0f} s"
        time.sleep(_POLL_SECONDS)
    return value
