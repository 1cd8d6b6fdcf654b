"""A model's main session gives its CPU arena's growth back after large runs (more than one image, feeds of at least
ARENA_RELEASE_FEED_BYTES): at once outside any request, and once the request's work has ended within one; smaller
runs and runs merged from small requests keep the arena. Measured in a fresh process
per case (resident memory and page faults are the process's), against the same run with the release turned off.

The model is wide and cheap (a 1x1 convolution to 64 channels, then elementwise ops): a run of 32 images holds
hundreds of MB of activations, so the differences are far from any noise of the interpreter or the allocator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxplain.server.engine.cancel import CancelToken
from onnxplain.server.engine.derived import DerivedSession, derived_session_options
from onnxplain.server.engine.providers import CPU
from onnxplain.server.engine.session import ARENA_RELEASE_FEED_BYTES

SIDE = 128
CHANNELS = 64
CLASSES = 10
LARGE_ROWS = 32  # 6 MiB of feeds, 128 MiB per activation
SMALL_ROWS = 6  # 1.1 MiB of feeds
MIB = 1024 * 1024

# Runs in a fresh process: loads a ModelSession as the loader does (warmed up with one image), then runs the large
# batch as `mode` says, printing how much resident memory it left behind and the page faults of one more small and
# one more large run.
SCRIPT = f"""
import json, resource, sys, threading, time
from pathlib import Path
import numpy as np
import onnxplain.server.engine.session as session_module
from onnxplain.server.engine.cancel import CancelToken
from onnxplain.server.engine.scheduler import BatchingPolicy, RunScheduler

path, mode, release = sys.argv[1], sys.argv[2], sys.argv[3] == "release"
if not release:
    session_module.ARENA_RELEASE_FEED_BYTES = sys.maxsize
merged_rows = []
scheduler = None
if mode != "direct":
    observe = lambda rows, waits: merged_rows.append(rows)
    scheduler = RunScheduler("m", BatchingPolicy(max_batch_size={LARGE_ROWS}), observe)
session = session_module.ModelSession(
    Path(path), providers=["CPUExecutionProvider"], threads=1, input_name="image", output_name="scores",
    fixed_batch=None, scheduler=scheduler,
)
def images(rows):
    return np.random.default_rng(rows).random((rows, 3, {SIDE}, {SIDE}), dtype=np.float32)
def resident():
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmRSS"))
    return int(line.split()[1]) * 1024
def faults(run):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    run()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
session.run(images(1))
small, large = images({SMALL_ROWS}), images({LARGE_ROWS})
if mode == "merged":  # two requests of half the rows queue up behind a held run, then run as one batch
    def run_large():
        started, release = threading.Event(), threading.Event()
        def hold(arrays, token):
            started.set()
            release.wait()
            return arrays
        holding = threading.Thread(target=scheduler.run, args=(hold, [np.zeros((1, 1))]))
        holding.start()
        started.wait()
        tokens = [CancelToken(), CancelToken()]
        halves = [threading.Thread(target=session.run, args=pair) for pair in zip(np.split(large, 2), tokens)]
        for thread in halves:
            thread.start()
        while scheduler.queued < 2:
            time.sleep(0.01)
        merged_rows.clear()
        release.set()
        for thread in [holding, *halves]:
            thread.join()
        for token in tokens:
            token.end_work()
elif mode == "direct":  # outside any request
    def run_large():
        session.run(large)
else:  # a request's run through the scheduler; "unended": its work has not ended yet
    def run_large():
        token = CancelToken()
        session.run(large, token)
        if mode != "unended":
            token.end_work()
before = resident()
run_large()
run_large()  # the first run of a shape allocates tensor by tensor, the next ones the planned block at once
after = resident()
session.run(small)
session.run(small)
small_faults = faults(lambda: session.run(small))
print(json.dumps({{
    "growth": after - before,
    "small_faults": small_faults,
    "large_faults": faults(run_large),
    "large_runs": sorted(merged_rows),
}}))
"""


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """image (n, 3, 128, 128) -> 1x1 Conv to 64 channels -> Relu -> Mul -> Add -> global average -> Gemm -> scores."""
    rng = np.random.default_rng(0)
    weights = {
        "conv_w": rng.normal(size=(CHANNELS, 3, 1, 1)),
        "gain": rng.normal(size=(1, CHANNELS, 1, 1)),
        "offset": rng.normal(size=(1, CHANNELS, 1, 1)),
        "fc_w": rng.normal(size=(CHANNELS, CLASSES)),
    }
    nodes = [
        helper.make_node("Conv", ["image", "conv_w"], ["conv"]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("Mul", ["relu", "gain"], ["scaled"]),
        helper.make_node("Add", ["scaled", "offset"], ["shifted"]),
        helper.make_node("GlobalAveragePool", ["shifted"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "wide",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, SIDE, SIDE])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", CLASSES])],
        [numpy_helper.from_array(value.astype(np.float32), name) for name, value in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("arena") / "wide.onnx"
    onnx.save(model, path)
    return path


def _measure(model_path: Path, mode: str, release: bool) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(model_path), mode, "release" if release else "keep"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def test_the_cases_straddle_the_release_threshold() -> None:
    """The large run is large, and neither the small run nor either half of the merged one is, should
    ARENA_RELEASE_FEED_BYTES be tuned later."""
    image_bytes = 3 * SIDE * SIDE * 4
    assert SMALL_ROWS * image_bytes < LARGE_ROWS // 2 * image_bytes < ARENA_RELEASE_FEED_BYTES
    assert LARGE_ROWS * image_bytes >= ARENA_RELEASE_FEED_BYTES


@pytest.fixture(scope="module")
def kept(model_path: Path) -> dict:
    """The same process with the release turned off: the arena keeps what the large run grew it by."""
    measured = _measure(model_path, "direct", release=False)
    assert measured["growth"] > 200 * MIB
    assert measured["large_faults"] < 1000  # the kept arena serves the run again without new pages
    return measured


@pytest.mark.parametrize("mode", ["direct", "alone"])
def test_a_large_run_gives_its_arena_growth_back(model_path: Path, kept: dict, mode: str) -> None:
    """Outside any request at once; within a request once its work has ended."""
    released = _measure(model_path, mode, release=True)
    assert released["growth"] < kept["growth"] / 4
    assert released["large_faults"] > 20_000  # the next large run faults its activations in again


def test_a_requests_large_runs_keep_the_arena_until_its_work_ends(model_path: Path, kept: dict) -> None:
    """Its next batches reuse the arena instead of faulting their activations in again."""
    unended = _measure(model_path, "unended", release=True)
    assert unended["growth"] > kept["growth"] / 2
    assert unended["large_faults"] < 1000


def test_runs_merged_from_small_requests_keep_the_arena(model_path: Path, kept: dict) -> None:
    """Each request's half is below the threshold; dynamic batching bounds what merged runs grow the arena by."""
    merged = _measure(model_path, "merged", release=True)
    assert merged["large_runs"] == [1, LARGE_ROWS]  # the held run, then both halves in one
    assert merged["growth"] > kept["growth"] / 2


def test_smaller_runs_keep_the_arena(model_path: Path) -> None:
    released = _measure(model_path, "direct", release=True)
    assert released["small_faults"] < 1000  # its activations stay in the arena from one run to the next


def test_what_a_request_asks_to_run_at_its_end_runs_once_per_key() -> None:
    token, calls = CancelToken(), []
    for key in ("a", "a", "b"):
        token.at_end(key, lambda key=key: calls.append(key))
    token.end_work()
    token.end_work()
    assert calls == ["a", "b"]


def test_sessions_without_an_arena_run_large_batches(model_path: Path) -> None:
    """Derived sessions have no CPU arena, which ONNX Runtime's release option requires: they never ask for it."""
    created = ort.InferenceSession(str(model_path), derived_session_options(1), providers=[CPU])
    derived = DerivedSession(created)
    (scores,) = derived.run({"image": np.zeros((LARGE_ROWS, 3, SIDE, SIDE), np.float32)}, CancelToken())
    assert scores.shape == (LARGE_ROWS, CLASSES)
