"""Calls that outlive a server restart: UNAVAILABLE and DEADLINE_EXCEEDED are retried with exponential backoff."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from onnxplain.client.errors import OnnxplainError

R = TypeVar("R")

TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class Stopped(Exception):
    """The audit is stopping: a call waiting to be retried gives up at once instead of holding the exit up."""


@dataclass(frozen=True)
class Backoff:
    first_delay: float = 0.5
    factor: float = 2.0
    max_delay: float = 10.0
    give_up_after: float = 600.0
    """Seconds of waiting between failed tries after which the error is raised (the audit stops; a rerun resumes)."""

    def delays(self) -> list[float]:
        """The waits between tries, in order, summing to at most give_up_after."""
        delays, delay, total = [], self.first_delay, 0.0
        while total + delay <= self.give_up_after:
            delays.append(delay)
            total += delay
            delay = min(delay * self.factor, self.max_delay)
        return delays


def with_retries(
    call: Callable[[], R],
    backoff: Backoff,
    on_retry: Callable[[OnnxplainError, float], None] | None = None,
    wait: Callable[[float], bool | None] = time.sleep,
) -> R:
    """The call's result; a transient failure is retried after each of the backoff's delays, then raised.

    `wait` waits a delay out; it returns True to stop waiting for good (a stop event's `wait`), raising Stopped."""
    for delay in backoff.delays():
        try:
            return call()
        except OnnxplainError as error:
            if error.code not in TRANSIENT:
                raise
            if on_retry is not None:
                on_retry(error, delay)
        if wait(delay):
            raise Stopped()
    return call()
