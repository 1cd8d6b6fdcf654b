"""The run scheduler merges concurrent small runs into batches and splits the results back, refuses when its queue
is full, drops cancelled runs, and lets its threads go with the model; explanation slots bound long work."""

from __future__ import annotations

import gc
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from support.waiting import CEILING_SECONDS as WAIT_CEILING_S
from support.waiting import wait_until

from onnxplain.server.engine.cancel import CancelToken
from onnxplain.server.engine.scheduler import BatchingPolicy, RunScheduler
from onnxplain.server.errors import Cancelled, ResourceExhausted


class RecordingRunner:
    """Doubles its input and records the batch sizes and tokens it was called with; can hold a run until released."""

    def __init__(self, hold: threading.Event | None = None) -> None:
        self.batches: list[int] = []
        self.tokens: list[CancelToken | None] = []
        self.hold = hold
        self.started = threading.Event()

    def __call__(self, arrays: list[np.ndarray], token: CancelToken | None) -> list[np.ndarray]:
        self.started.set()
        if self.hold is not None:
            assert self.hold.wait(WAIT_CEILING_S)
        self.batches.append(len(arrays[0]))
        self.tokens.append(token)
        return [arrays[0] * 2, arrays[0].sum(axis=1)]


def test_concurrent_runs_share_batches_and_get_their_own_rows_back() -> None:
    """The first run holds the model's thread; the seven sent meanwhile queue up and run as one batch."""
    hold = threading.Event()
    scheduler = RunScheduler("m", BatchingPolicy(max_batch_size=8))
    runner = RecordingRunner(hold)
    inputs = [np.full((1, 3), i, dtype=np.float32) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(scheduler.run, runner, [inputs[0]], key="same")]
        assert runner.started.wait(WAIT_CEILING_S)
        futures += [pool.submit(scheduler.run, runner, [x], key="same") for x in inputs[1:]]
        _wait_for(lambda: scheduler.queued == 7)
        hold.set()
        results = [future.result(WAIT_CEILING_S) for future in futures]
    for x, (doubled, summed) in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(doubled, x * 2)
        np.testing.assert_array_equal(summed, x.sum(axis=1))
    assert runner.batches == [1, 7]


def test_a_run_alone_is_handed_its_requests_token_and_a_merged_run_none() -> None:
    """The runner runs under the token's RunOptions, which the request's cancel terminates; no single request can
    stop a merged run."""
    hold = threading.Event()
    scheduler = RunScheduler("m", BatchingPolicy(max_batch_size=8))
    runner = RecordingRunner(hold)
    alone, first, second = CancelToken(), CancelToken(), CancelToken()
    with ThreadPoolExecutor(3) as pool:
        running = pool.submit(scheduler.run, runner, [np.ones((1, 2))], alone, key="k")
        assert runner.started.wait(WAIT_CEILING_S)
        merged = [pool.submit(scheduler.run, runner, [np.ones((1, 2))], token, key="k") for token in (first, second)]
        _wait_for(lambda: scheduler.queued == 2)
        hold.set()
        for future in [running, *merged]:
            future.result(WAIT_CEILING_S)
    assert runner.batches == [1, 2]
    assert runner.tokens == [alone, None]


def test_batches_stay_within_the_size_and_runs_without_a_key_stay_alone() -> None:
    hold = threading.Event()
    scheduler = RunScheduler("m", BatchingPolicy(max_batch_size=4))
    runner = RecordingRunner(hold)
    with ThreadPoolExecutor(12) as pool:
        first = pool.submit(scheduler.run, runner, [np.ones((1, 2))], key="k")
        assert runner.started.wait(WAIT_CEILING_S)  # the first run blocks the thread: the rest queue up behind it
        keyed = [pool.submit(scheduler.run, runner, [np.ones((1, 2))], key="k") for _ in range(6)]
        other = pool.submit(scheduler.run, runner, [np.ones((2, 2))], key="other")
        alone = [pool.submit(scheduler.run, runner, [np.ones((1, 2))]) for _ in range(2)]
        _wait_for(lambda: scheduler.queued == 9)
        hold.set()
        for future in [first, *keyed, other, *alone]:
            future.result(WAIT_CEILING_S)
    assert runner.batches[0] == 1
    assert sorted(runner.batches[1:]) == [1, 1, 2, 2, 4]  # 6 keyed rows as 4 + 2, "other" alone, 2 without key


def test_a_full_queue_refuses_at_once() -> None:
    hold = threading.Event()
    scheduler = RunScheduler("m", BatchingPolicy(max_queue_size=2))
    runner = RecordingRunner(hold)
    with ThreadPoolExecutor(4) as pool:
        running = pool.submit(scheduler.run, runner, [np.ones((1, 1))])
        assert runner.started.wait(WAIT_CEILING_S)
        queued = [pool.submit(scheduler.run, runner, [np.ones((1, 1))]) for _ in range(2)]
        _wait_for(lambda: scheduler.queued == 2)
        # Refused while the queue is still full (nothing is released before): the run does not wait for room.
        with pytest.raises(ResourceExhausted, match="2 runs queued"):
            scheduler.run(runner, [np.ones((1, 1))])
        hold.set()
        for future in [running, *queued]:
            future.result(WAIT_CEILING_S)


def test_an_admitted_explanation_is_not_refused_by_a_full_queue() -> None:
    hold = threading.Event()
    scheduler = RunScheduler("m", BatchingPolicy(max_queue_size=1))
    runner = RecordingRunner(hold)
    admitted = CancelToken()
    admitted.admitted = True
    with ThreadPoolExecutor(3) as pool:
        running = pool.submit(scheduler.run, runner, [np.ones((1, 1))])
        assert runner.started.wait(WAIT_CEILING_S)
        queued = pool.submit(scheduler.run, runner, [np.ones((1, 1))])
        _wait_for(lambda: scheduler.queued == 1)
        with pytest.raises(ResourceExhausted):
            scheduler.run(runner, [np.ones((1, 1))], CancelToken())
        passing = pool.submit(scheduler.run, runner, [np.ones((1, 1))], admitted)
        _wait_for(lambda: scheduler.queued == 2)
        hold.set()
        for future in (running, queued, passing):
            future.result(WAIT_CEILING_S)


def test_a_cancelled_run_leaves_the_queue_before_it_runs() -> None:
    hold = threading.Event()
    scheduler = RunScheduler("m", BatchingPolicy())
    runner = RecordingRunner(hold)
    token = CancelToken()
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(scheduler.run, runner, [np.ones((1, 1))])
        assert runner.started.wait(WAIT_CEILING_S)
        cancelled = pool.submit(scheduler.run, runner, [np.ones((3, 1))], token)
        _wait_for(lambda: scheduler.queued == 1)
        token.cancel()
        with pytest.raises(Cancelled):
            cancelled.result(WAIT_CEILING_S)
        assert scheduler.queued == 0
        hold.set()
        running.result(WAIT_CEILING_S)
    assert runner.batches == [1]


def test_a_failing_run_fails_every_request_merged_into_it() -> None:
    hold = threading.Event()
    scheduler = RunScheduler("m", BatchingPolicy(max_batch_size=8))
    calls = []

    def failing(arrays: list[np.ndarray], options: object) -> list[np.ndarray]:
        calls.append(len(arrays[0]))
        assert hold.wait(WAIT_CEILING_S)
        raise RuntimeError("boom")

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(scheduler.run, failing, [np.ones((1, 1))], key="k")]
        _wait_for(lambda: calls)
        futures += [pool.submit(scheduler.run, failing, [np.ones((1, 1))], key="k") for _ in range(3)]
        _wait_for(lambda: scheduler.queued == 3)
        hold.set()
        for future in futures:
            with pytest.raises(RuntimeError, match="boom"):
                future.result(WAIT_CEILING_S)
    assert calls == [1, 3]


def test_the_threads_end_with_the_scheduler() -> None:
    def serving_threads() -> int:
        return sum(thread.name.startswith("onnxplain-run-gone-") for thread in threading.enumerate())

    scheduler = RunScheduler("gone", BatchingPolicy(instances=3))
    scheduler.run(RecordingRunner(), [np.ones((1, 1))])
    assert serving_threads() == 3
    del scheduler
    gc.collect()
    _wait_for(lambda: serving_threads() == 0)


def _wait_for(condition) -> None:
    wait_until(condition, WAIT_CEILING_S)
