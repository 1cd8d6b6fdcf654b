"""Bounded concurrency for long explanations: a model computes a few at once, a few more wait, the rest are
refused at once (RESOURCE_EXHAUSTED) so a burst of heavy requests cannot queue without end behind each other."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from onnxplain.server.engine.cancel import CANCEL_POLL_SECONDS, CancelToken
from onnxplain.server.errors import Cancelled, ResourceExhausted


class ExplanationSlots:
    def __init__(self, name: str, concurrent: int, waiting: int) -> None:
        self.name = name
        self.concurrent = concurrent
        self.waiting = waiting
        self._running = 0
        self._queued = 0
        self._condition = threading.Condition()

    @contextmanager
    def hold(self, token: CancelToken | None = None) -> Iterator[None]:
        """A slot for the duration of the block; waits for one while others run, until the token is cancelled."""
        with self._condition:
            if self._running >= self.concurrent and self._queued >= self.waiting:
                raise ResourceExhausted(
                    f"model {self.name} is computing {self._running} explanations with {self._queued} waiting, its "
                    "limit: try again later"
                )
            self._queued += 1
            try:
                while self._running >= self.concurrent:
                    if token is not None and token.cancelled:
                        raise Cancelled("the call was cancelled")
                    self._condition.wait(CANCEL_POLL_SECONDS)
            finally:
                self._queued -= 1
            self._running += 1
        if token is not None:
            token.admitted = True
        try:
            yield
        finally:
            if token is not None:
                token.admitted = False
            with self._condition:
                self._running -= 1
                self._condition.notify()
