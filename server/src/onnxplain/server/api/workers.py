"""Blocking request work on the executor, stopped through its CancelToken when the gRPC call is cancelled.

ONNX Runtime never runs on the event loop; every servicer hands its handlers to the executor through `in_worker`.
Long work waits for its turns (engine/admission.py) on the event loop before it is handed over, so waiting calls hold
no thread; the turns are given back when the work has ended, not when its call did.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import TypeVar

from onnxplain.server.engine.admission import Turns
from onnxplain.server.engine.cancel import CancelToken, RunningWork
from onnxplain.server.observability.call import current_call
from onnxplain.server.observability.metrics import observe_queue_time, queued

Result = TypeVar("Result")
log = logging.getLogger("onnxplain.server")

# The work of every call in flight: at the end of the shutdown grace the server cancels what is left (app.py).
RUNNING = RunningWork()


def long_work_threads(workers: int) -> int:
    """Worker threads long explanations may hold at once: half of them, so the other half always serves
    predictions, single-pass explanations and model management."""
    return max(1, workers // 2)


async def in_worker(executor: Executor, work: Callable[[CancelToken], Result], turns: Sequence[Turns] = ()) -> Result:
    """Run blocking work on the executor after taking each of `turns` in order; if the call is cancelled, stop the
    work through its token."""
    taken = await _take(turns)
    token = RUNNING.start()
    token.admitted = bool(taken)
    try:
        future = asyncio.get_running_loop().run_in_executor(executor, queued(_ending(work)), token)
    except BaseException:  # the executor is shut down
        _ended(token, taken)
        raise
    future.add_done_callback(lambda _: _ended(token, taken))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        token.cancel()
        # The worker ends with Cancelled at its next check; nobody awaits it any more, so consume that here.
        future.add_done_callback(_consume_result)
        raise


def _ending(work: Callable[[CancelToken], Result]) -> Callable[[CancelToken], Result]:
    """`work`, then what its runs asked to do once it ends (CancelToken.at_end), in the same worker thread."""

    def run(token: CancelToken) -> Result:
        try:
            return work(token)
        finally:
            token.end_work()

    return run


async def _take(turns: Sequence[Turns]) -> list[Turns]:
    """Every turn, or none: a refusal or a cancellation gives back those already taken."""
    started, taken = time.perf_counter(), []
    try:
        for turn in turns:
            await turn.take()
            taken.append(turn)
    except BaseException:
        _give_back(taken)
        raise
    if turns:
        call = current_call.get()
        observe_queue_time(call.model if call else "", time.perf_counter() - started, "admission")
    return taken


def _ended(token: CancelToken, taken: list[Turns]) -> None:
    RUNNING.end(token)
    _give_back(taken)


def _give_back(taken: list[Turns]) -> None:
    for turn in reversed(taken):
        turn.give_back()


def _consume_result(future: asyncio.Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.info("cancelled work stopped: %s", future.exception())
