"""Concurrent LRP runs on one model share a batch when they feed the same rule parameters, and each gets the rows it
gets alone; runs that feed other values never share one. LRP's parameters (epsilon, gamma, z-box bounds) are inputs
common to a run's rows, fed once per run: a merged run concatenates only the images, seeds and ranks."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from support.models import SmallCNN, export, write_model
from support.waiting import CEILING_SECONDS, wait_until

from onnxplain.server.engine.backward.rulesets import get_ruleset
from onnxplain.server.engine.gradients import BackwardResult, BackwardSpec, backward_session
from onnxplain.server.engine.scheduler import BatchingPolicy, RunScheduler
from onnxplain.server.repository.loader import load_model
from onnxplain.server.repository.model import LoadedModel
from onnxplain.server.repository.registry import ModelRegistry
from onnxplain.server.settings import ServerSettings

SHAPE = (3, 12, 10)
CLASSES = 5
# epsilon_gamma_box's parameters; its z-box bounds per channel (arrays, not only scalars, are matched).
PARAMETERS = {"epsilon": 0.05, "gamma": 0.5, "low": [-2.0, -1.5, -1.0], "high": [2.0, 1.5, 1.0]}


@pytest.fixture
def model(tmp_path: Path) -> LoadedModel:
    write_model(tmp_path, "cnn", export(SmallCNN(seed=5).eval(), (1, *SHAPE)))
    settings = ServerSettings(model_repository=tmp_path, device="cpu")
    registry = ModelRegistry(tmp_path, lambda source: load_model(source, settings))
    registry.load("cnn")
    return registry.get("cnn")


class ObservedScheduler:
    """A scheduler for the model's derived sessions that records how many requests each run served, and can hold
    its only instance so that runs queue up behind it and are then served together."""

    def __init__(self, model: LoadedModel) -> None:
        self.requests_per_run: list[int] = []
        self.scheduler = RunScheduler("cnn", BatchingPolicy(max_batch_size=8), self._observe)
        model.derived.scheduler = self.scheduler  # the backward session, built after this, runs through it

    def _observe(self, rows: int, waits: list[float]) -> None:
        self.requests_per_run.append(len(waits))

    def run_queued_together(self, runs: list[Callable[[], BackwardResult]]) -> list[BackwardResult]:
        started, release = threading.Event(), threading.Event()

        def hold(arrays: list[np.ndarray], token: object) -> list[np.ndarray]:
            started.set()
            assert release.wait(CEILING_SECONDS)
            return arrays

        with ThreadPoolExecutor(len(runs) + 1) as pool:
            holding = pool.submit(self.scheduler.run, hold, [np.zeros((1, 1), np.float32)])
            assert started.wait(CEILING_SECONDS)
            futures = [pool.submit(run) for run in runs]
            wait_until(lambda: self.scheduler.queued == len(runs), what="every run queued")
            self.requests_per_run.clear()
            release.set()
            holding.result(CEILING_SECONDS)
            return [future.result(CEILING_SECONDS) for future in futures]


def _spec(**changed: object) -> BackwardSpec:
    """A request's rule set (built anew each time: runs are matched on values, not on objects)."""
    return BackwardSpec(ruleset=get_ruleset("lrp", composite="epsilon_gamma_box", **{**PARAMETERS, **changed}))


def _request(model: LoadedModel, spec: BackwardSpec, seed: int, target: int) -> Callable[[], BackwardResult]:
    """One request's backward run: an image of its own and the one-hot seed of its target."""
    image = np.random.default_rng(seed).normal(size=(1, *SHAPE)).astype(np.float32)
    seed_row = np.eye(CLASSES, dtype=np.float32)[[target]]
    return lambda: backward_session(model, SHAPE, spec).run(image, seed_row)


def _assert_same_rows(got: BackwardResult, alone: BackwardResult) -> None:
    for field in ("scores", "input_gradient"):
        expected = getattr(alone, field)
        actual = getattr(got, field)
        assert actual.shape == expected.shape
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


def test_runs_with_equal_parameters_share_a_batch_and_get_their_rows_alone(model: LoadedModel) -> None:
    observed = ObservedScheduler(model)
    requests = [_request(model, _spec(), seed=1, target=2), _request(model, _spec(), seed=2, target=4)]
    alone = [run() for run in requests]
    together = observed.run_queued_together(requests)
    assert sorted(observed.requests_per_run) == [1, 2]  # the holding run, then both requests in one run
    for got, expected in zip(together, alone, strict=True):
        _assert_same_rows(got, expected)
    assert model.derived.builds == 1


@pytest.mark.parametrize(
    "changed", [{"gamma": 1.5}, {"epsilon": 0.5}, {"low": [-2.0, -1.5, -0.5]}], ids=["gamma", "epsilon", "bound"]
)
def test_runs_with_other_parameters_never_share_a_batch(model: LoadedModel, changed: dict[str, object]) -> None:
    """The same image and target: only the parameters differ."""
    observed = ObservedScheduler(model)
    requests = [_request(model, _spec(), seed=1, target=2), _request(model, _spec(**changed), seed=1, target=2)]
    alone = [run() for run in requests]
    together = observed.run_queued_together(requests)
    assert sorted(observed.requests_per_run) == [1, 1, 1]  # the holding run, then each request alone
    for got, expected in zip(together, alone, strict=True):
        _assert_same_rows(got, expected)
    assert not np.allclose(alone[0].input_gradient, alone[1].input_gradient)  # the values fed made a difference
