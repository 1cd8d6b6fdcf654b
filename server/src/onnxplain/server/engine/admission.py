"""Admission of long explanations before they take a worker thread.

A call that computes many passes waits for a turn on the event loop, holding no thread: first its model's turn (a
few compute at once, a few more wait, the rest are refused at once with RESOURCE_EXHAUSTED), then one of the
server's long-work turns, of which there are fewer than worker threads, so predictions and other short calls always
find a thread. The transport takes the turns (api/workers.py) and gives them back when the work has ended, also when
the call was cancelled before that.

Turns live on one event loop: they are taken and given back there, never from worker threads.
"""

from __future__ import annotations

import asyncio
from collections import deque

from onnxplain.server.errors import ResourceExhausted


class Turns:
    """`limit` holders at once, served in arrival order; beyond that at most `waiting` callers wait (None: no
    bound) and the next is refused at once."""

    def __init__(self, limit: int, waiting: int | None = None) -> None:
        self.limit = max(1, limit)
        self.waiting_limit = waiting
        self._holders = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def holders(self) -> int:
        return self._holders

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def take(self) -> None:
        """Wait for a turn; raises ResourceExhausted at once when the waiting room is full. A caller cancelled while
        waiting leaves the line without a turn."""
        if self._holders < self.limit and not self._waiters:
            self._holders += 1
            return
        if self.waiting_limit is not None and len(self._waiters) >= self.waiting_limit:
            raise ResourceExhausted(self.refusal())
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # give_back hands its turn over: the holder count stays
        except asyncio.CancelledError:
            if not waiter.cancelled():
                self.give_back()  # the turn arrived together with the cancellation: pass it on
            elif waiter in self._waiters:  # give_back may have passed over it already
                self._waiters.remove(waiter)
            raise

    def give_back(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._holders -= 1

    def refusal(self) -> str:
        return f"{self._holders} calls hold a turn and {len(self._waiters)} wait, the limit: try again later"


class ExplanationSlots(Turns):
    """One model's turns for explanations of many passes (single-pass ones share batches through the model's
    scheduler instead) and for evaluations."""

    def __init__(self, name: str, concurrent: int, waiting: int) -> None:
        super().__init__(concurrent, waiting)
        self.name = name

    def refusal(self) -> str:
        return (
            f"model {self.name} is computing {self.holders} explanations with {self.waiting} waiting, its limit: "
            "try again later"
        )
