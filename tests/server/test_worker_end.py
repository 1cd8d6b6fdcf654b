"""What a request's runs ask to do once its work has ended (CancelToken.at_end: a session giving back the memory
its large runs grew) runs in the worker thread when the work ends, whether it returned or raised."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from onnxplain.server.api.workers import in_worker
from onnxplain.server.engine.cancel import CancelToken


def _run(work) -> tuple[list[str], object]:
    calls: list[str] = []

    def asking(token: CancelToken) -> str:
        token.at_end("session", lambda: calls.append(threading.current_thread().name))
        return work(calls)

    with ThreadPoolExecutor(1, thread_name_prefix="worker") as executor:
        try:
            outcome = asyncio.run(in_worker(executor, asking))
        except RuntimeError as error:
            outcome = error
    return calls, outcome


def test_it_runs_in_the_worker_after_the_work_returned() -> None:
    calls, outcome = _run(lambda calls: f"done with {len(calls)} calls")
    assert outcome == "done with 0 calls"
    assert len(calls) == 1 and calls[0].startswith("worker")


def test_it_runs_after_work_that_raised() -> None:
    def failing(calls: list[str]) -> str:
        raise RuntimeError("failed")

    calls, outcome = _run(failing)
    assert isinstance(outcome, RuntimeError)
    assert len(calls) == 1
