"""Blocking request work on the executor, stopped through its CancelToken when the gRPC call is cancelled.

ONNX Runtime never runs on the event loop; every servicer hands its handlers to the executor through `in_worker`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TypeVar

from onnxplain.server.engine.cancel import CancelToken
from onnxplain.server.observability.metrics import queued

Result = TypeVar("Result")
log = logging.getLogger("onnxplain.server")


async def in_worker(executor: Executor, work: Callable[[CancelToken], Result]) -> Result:
    """Run blocking work on the executor; if the call is cancelled, stop it through its token."""
    token = CancelToken()
    future = asyncio.get_running_loop().run_in_executor(executor, queued(work), token)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        token.cancel()
        # The worker ends with Cancelled at its next check; nobody awaits it any more, so consume that here.
        future.add_done_callback(_consume_result)
        raise


def _consume_result(future: asyncio.Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.info("cancelled work stopped: %s", future.exception())
