"""Every ONNX Runtime run of a model version goes through its scheduler: a bounded queue served by its own threads.

Runs that wait together and can share a batch (the same session and outputs, rows of the same shape) are merged
into one run, as Triton's dynamic batcher does: up to `max_batch_size` rows, waiting at most `max_queue_delay_us`
after the first for more to arrive. A full queue refuses new work at once (RESOURCE_EXHAUSTED) instead of letting
latency grow without bound; the runs of an explanation already admitted (engine/admission.py, a few per model) are
never refused half-way. Queued runs of a cancelled request are dropped; a run executing alone is handed its request's
token, whose RunOptions stop it; a merged run, handed none, finishes (it is short by construction) and the cancelled
request discards its rows.

A run that finds no run executing and none queued, and has nothing to wait for (it cannot merge, or the queue delay
is 0), executes at once on the caller's thread: the hand-over to a serving thread and back cost two thread wake-ups
per run, which on 2 busy cores made the runs of a small model (the 28x28 demo, RISE in batches of 16) take as long
again as ONNX Runtime itself. At most `instances` runs execute at once either way.

The serving threads hold only the queue's state, not the scheduler: when the last reference to the scheduler goes
(its model version was replaced and the requests still using it finished), the threads drain the queue and exit.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from onnxplain.server.engine.cancel import CANCEL_POLL_SECONDS, CancelToken
from onnxplain.server.errors import Cancelled, ResourceExhausted

# Runs arrays under a request's token (None: a merged run, which no single request can stop).
Runner = Callable[[list[np.ndarray], CancelToken | None], list[np.ndarray]]
# Called after each run with its rows and the seconds each merged request waited in the queue.
BatchObserver = Callable[[int, list[float]], None]


@dataclass(frozen=True)
class BatchingPolicy:
    max_batch_size: int = 16
    max_queue_delay_us: int = 0
    max_queue_size: int = 256
    instances: int = 1


@dataclass(eq=False)
class _Pending:
    runner: Runner
    arrays: list[np.ndarray]
    token: CancelToken | None
    # Runs with equal keys may share a batch; None: always alone.
    key: Hashable | None
    enqueued: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    result: list[np.ndarray] | None = None
    error: BaseException | None = None

    @property
    def rows(self) -> int:
        return len(self.arrays[0])

    def joins(self, other: _Pending) -> bool:
        """Keys name the session, its outputs, the rows' shapes and dtypes and the values of the feeds common to all
        rows (engine/session.py run_guarded)."""
        return self.key is not None and self.key == other.key


class _State:
    """What the serving threads share with the scheduler: the queue, its lock, how many runs execute (on serving
    threads or their callers' threads), and whether it is closed."""

    def __init__(self) -> None:
        self.queue: deque[_Pending] = deque()
        self.condition = threading.Condition()
        self.executing = 0
        self.closed = False

    def close(self) -> None:
        with self.condition:
            self.closed = True
            self.condition.notify_all()


class RunScheduler:
    def __init__(self, name: str, policy: BatchingPolicy, observe: BatchObserver | None = None) -> None:
        self.name = name
        self.policy = policy
        self._observe = observe
        self._state = _State()
        for index in range(max(1, policy.instances)):
            threading.Thread(
                target=_serve, args=(self._state, policy, observe), name=f"onnxplain-run-{name}-{index}", daemon=True
            ).start()
        weakref.finalize(self, self._state.close)

    @property
    def queued(self) -> int:
        return len(self._state.queue)

    def run(
        self, runner: Runner, arrays: Sequence[np.ndarray], token: CancelToken | None = None, *, key: Hashable = None
    ) -> list[np.ndarray]:
        """`runner(arrays, token)` on a serving thread, perhaps merged with other requests' rows (when `key`
        is given, rows aligned on axis 0 of every array and output), or at once on this thread when nothing runs
        or waits; blocks until done or cancelled."""
        pending = _Pending(runner, list(arrays), token, key)
        state, policy = self._state, self.policy
        with state.condition:
            admitted = token is not None and token.admitted
            if len(state.queue) >= policy.max_queue_size and not admitted:
                raise ResourceExhausted(
                    f"model {self.name} has {len(state.queue)} runs queued, its limit: try again later"
                )
            at_once = not state.queue and state.executing < policy.instances
            at_once = at_once and (key is None or policy.max_queue_delay_us == 0)
            if at_once:
                state.executing += 1
            else:
                state.queue.append(pending)
                state.condition.notify()
        if at_once:
            self._execute_here(pending)
        else:
            self._wait(pending)
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    def _execute_here(self, pending: _Pending) -> None:
        try:
            _execute([pending])
        finally:
            _finished(self._state)
        if self._observe is not None:
            self._observe(pending.rows, [0.0])

    def _wait(self, pending: _Pending) -> None:
        """Until a serving thread has run `pending`; takes it out of the queue if its request is cancelled first."""
        state, token = self._state, pending.token
        while not pending.done.wait(CANCEL_POLL_SECONDS):
            if token is not None and token.cancelled:
                with state.condition:
                    if pending in state.queue:
                        state.queue.remove(pending)
                        raise Cancelled("the call was cancelled")


def _serve(state: _State, policy: BatchingPolicy, observe: BatchObserver | None) -> None:
    while True:
        batch = _next_batch(state, policy)
        if batch is None:
            return
        started = time.monotonic()
        try:
            _execute(batch)
        finally:
            _finished(state)
        if observe is not None:
            observe(sum(p.rows for p in batch), [started - p.enqueued for p in batch])


def _next_batch(state: _State, policy: BatchingPolicy) -> list[_Pending] | None:
    """The oldest run, with the queued runs that can join it, after waiting up to the queue delay for more."""
    with state.condition:
        while not state.queue or state.executing >= policy.instances:
            if state.closed and not state.queue:
                return None
            state.condition.wait()
        first = state.queue.popleft()
        state.executing += 1
        batch, rows = [first], first.rows
        deadline = first.enqueued + policy.max_queue_delay_us / 1e6
        while first.key is not None and rows < policy.max_batch_size:
            for pending in list(state.queue):
                if pending.joins(first) and rows + pending.rows <= policy.max_batch_size:
                    state.queue.remove(pending)
                    batch.append(pending)
                    rows += pending.rows
            remaining = deadline - time.monotonic()
            if rows >= policy.max_batch_size or remaining <= 0 or state.closed:
                break
            state.condition.wait(remaining)
        return batch


def _finished(state: _State) -> None:
    """A run ended: a serving thread waiting for a free instance may take the next batch."""
    with state.condition:
        state.executing -= 1
        state.condition.notify_all()


def _execute(batch: list[_Pending]) -> None:
    live = [p for p in batch if p.token is None or not p.token.cancelled]
    for pending in batch:
        if pending not in live:
            pending.error = Cancelled("the call was cancelled")
            pending.done.set()
    if not live:
        return
    try:
        if len(live) == 1:
            only = live[0]
            outputs = only.runner(only.arrays, only.token)
            only.result = outputs
        else:
            merged = [np.concatenate(parts) for parts in zip(*(p.arrays for p in live), strict=True)]
            outputs = live[0].runner(merged, None)
            start = 0
            for pending in live:
                pending.result = [output[start : start + pending.rows] for output in outputs]
                start += pending.rows
    except BaseException as error:  # handed to every waiting request, which raises it in its own thread
        for pending in live:
            pending.error = error
    for pending in live:
        pending.done.set()
