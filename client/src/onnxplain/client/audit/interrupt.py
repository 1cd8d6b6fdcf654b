"""Ctrl-C as a request to stop the audit, read by the runner between its waits.

Python turns SIGINT into a KeyboardInterrupt raised wherever the main thread happens to be, inside a lock or a
thread pool's bookkeeping as well: a lock left held there can keep the audit from ever exiting. So the first Ctrl-C
only sets a flag (the handler takes no lock) and puts the previous handler back, so that a second Ctrl-C interrupts
at once as usual.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType


class CtrlC:
    """While entered (in the main thread; elsewhere signals never arrive and this does nothing), `pressed` turns
    True at the first SIGINT instead of a KeyboardInterrupt being raised."""

    def __init__(self) -> None:
        self.pressed = False
        self._installed = False
        self._previous: object = None

    def __enter__(self) -> CtrlC:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_interrupt)
            self._installed = True
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._restore()

    def _on_interrupt(self, signum: int, frame: FrameType | None) -> None:
        self.pressed = True
        self._restore()

    def _restore(self) -> None:
        if self._installed:
            # None: the handler in place was not installed from Python; the default one raises KeyboardInterrupt.
            signal.signal(signal.SIGINT, signal.default_int_handler if self._previous is None else self._previous)
            self._installed = False
