"""Backoff: transient failures are retried after growing waits, up to a budget; other failures are not retried."""

import threading

import grpc
import pytest

from onnxplain.client.audit.retry import Backoff, Stopped, with_retries
from onnxplain.client.errors import OnnxplainError


class Flaky:
    """Fails with `code` the first `failures` times."""

    def __init__(self, failures: int, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        self.failures = failures
        self.code = code
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise OnnxplainError(self.code, f"failure {self.calls}")
        return "done"


def test_the_delays_grow_geometrically_up_to_a_cap_within_the_budget():
    backoff = Backoff(first_delay=0.5, factor=2.0, max_delay=3.0, give_up_after=12.0)
    assert backoff.delays() == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert sum(backoff.delays()) <= 12.0


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
def test_transient_failures_are_retried_after_each_delay(code):
    waits, retries = [], []
    call = Flaky(3, code)
    result = with_retries(
        call, Backoff(), on_retry=lambda error, delay: retries.append(error.message), wait=waits.append
    )
    assert result == "done"
    assert call.calls == 4
    assert waits == [0.5, 1.0, 2.0]
    assert retries == ["failure 1", "failure 2", "failure 3"]


def test_the_last_failure_is_raised_once_the_budget_is_spent():
    waits = []
    call = Flaky(100)
    with pytest.raises(OnnxplainError) as caught:
        with_retries(call, Backoff(give_up_after=4.0), wait=waits.append)
    assert waits == [0.5, 1.0, 2.0]
    assert call.calls == 4
    assert caught.value.message == "failure 4"


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND])
def test_other_failures_are_raised_at_once(code):
    waits = []
    call = Flaky(1, code)
    with pytest.raises(OnnxplainError):
        with_retries(call, Backoff(), wait=waits.append)
    assert call.calls == 1 and waits == []


def test_a_stopping_audit_ends_the_wait_at_once():
    """The stop comes while the call waits out an hour's delay: the wait ends then, not after the hour (the join's
    ceiling is far below it, and only a wait that ignored the stop reaches it)."""
    stop, waiting = threading.Event(), threading.Event()
    call = Flaky(100)
    outcome: list[BaseException] = []

    def wait(delay: float) -> bool:
        waiting.set()
        return stop.wait(delay)

    def retry() -> None:
        try:
            with_retries(call, Backoff(first_delay=3600.0, give_up_after=7200.0), wait=wait)
        except BaseException as error:
            outcome.append(error)

    retrying = threading.Thread(target=retry, daemon=True)
    retrying.start()
    assert waiting.wait(60)
    stop.set()
    retrying.join(60)
    assert not retrying.is_alive(), "the wait went on after the stop"
    assert len(outcome) == 1 and isinstance(outcome[0], Stopped)
    assert call.calls == 1
