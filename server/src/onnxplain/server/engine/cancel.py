"""Cancellation of running work: a client cancel, a passed deadline or the end of the shutdown grace stops the current
ONNX Runtime run."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable

import onnxruntime as ort

from onnxplain.server.errors import Cancelled

# How often work waiting for a turn (a run queue, an explanation slot) looks at its request's token.
CANCEL_POLL_SECONDS = 0.05


class CancelToken:
    """One per request. `cancel()` may be called from any thread; it terminates the run in flight
    (RunOptions.terminate) and makes the next check raise, so no further batch is scheduled."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.run_options = ort.RunOptions()
        # Set while the request holds an explanation turn (engine/admission.py): its runs are never refused by a
        # full run queue half-way through work already admitted.
        self.admitted = False
        # What to do once the request's work has ended (a session giving back the memory its runs grew), by key so
        # that many runs of one session ask for it once.
        self._at_end: dict[Hashable, Callable[[], None]] = {}
        self._at_end_lock = threading.Lock()

    def at_end(self, key: Hashable, callback: Callable[[], None]) -> None:
        """Call `callback` when the request's work ends (`end_work`), once per key."""
        with self._at_end_lock:
            self._at_end.setdefault(key, callback)

    def end_work(self) -> None:
        """The request's work has ended: run what asked to run then, in the calling (worker) thread."""
        with self._at_end_lock:
            callbacks, self._at_end = list(self._at_end.values()), {}
        for callback in callbacks:
            callback()

    def cancel(self) -> None:
        self._event.set()
        self.run_options.terminate = True

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("the call was cancelled")


class RunningWork:
    """The tokens of every request whose work is running, so that shutdown can stop all of it at once: work the
    call's own cancellation has not reached (or never will) stops as if its client had gone away."""

    def __init__(self) -> None:
        self._tokens: set[CancelToken] = set()
        self._changed = threading.Condition()

    def start(self) -> CancelToken:
        token = CancelToken()
        with self._changed:
            self._tokens.add(token)
        return token

    def end(self, token: CancelToken) -> None:
        with self._changed:
            self._tokens.discard(token)
            self._changed.notify_all()

    def cancel_all(self) -> int:
        """Cancel every running request's work; returns how many there were."""
        with self._changed:
            tokens = list(self._tokens)
        for token in tokens:
            token.cancel()
        return len(tokens)

    def wait_ended(self, timeout: float) -> int:
        """Wait up to `timeout` seconds for all work to end; returns how many are still running."""
        with self._changed:
            self._changed.wait_for(lambda: not self._tokens, timeout)
            return len(self._tokens)
