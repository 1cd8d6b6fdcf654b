"""Cancellation of running work: a client cancel or a passed deadline stops the current ONNX Runtime run."""

from __future__ import annotations

import threading

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

    def cancel(self) -> None:
        self._event.set()
        self.run_options.terminate = True

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("the call was cancelled")
