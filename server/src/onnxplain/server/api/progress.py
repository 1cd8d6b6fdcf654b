"""What an ExplainStream has not sent yet: bounded, whatever the method produces and however slowly the client reads.

The method reports from its worker thread; the stream takes on the event loop. Only the newest partial maps wait
(each report with maps replaces the older maps not sent yet) and only the newest pass counts after them, so a slow
reader costs at most one event of each kind. The final result and errors do not pass through here: the stream sends
them after what is pending, and they are never dropped.
"""

from __future__ import annotations

import asyncio
import threading

from onnxplain.server.handlers.schema import ExplainProgress


class PendingProgress:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._partial: ExplainProgress | None = None
        # Newer than `_partial`: counts reported after the last maps.
        self._counts: ExplainProgress | None = None
        self._arrived = asyncio.Event()

    def report(self, progress: ExplainProgress) -> None:
        """From any thread: keep `progress` in place of what it supersedes."""
        with self._lock:
            if progress.partial:
                self._partial, self._counts = progress, None
            else:
                self._counts = progress
        self._loop.call_soon_threadsafe(self._arrived.set)

    def take(self) -> list[ExplainProgress]:
        """What is pending, oldest first (on the event loop)."""
        with self._lock:
            pending = [event for event in (self._partial, self._counts) if event is not None]
            self._partial = self._counts = None
            self._arrived.clear()
        return pending

    async def wait(self, work: asyncio.Future) -> None:
        """Until something was reported since the last take, or the work ended."""
        arrived = asyncio.ensure_future(self._arrived.wait())
        try:
            await asyncio.wait([work, arrived], return_when=asyncio.FIRST_COMPLETED)
        finally:
            arrived.cancel()
