"""What the registry and the loader do with a repository that could hurt the server, in-process: folders that are
not versions, graphs with cycles or with nodes out of order, and loads that never finish (session creation blocked
on an event nobody sets).
tests/server/test_hostile_repository.py runs the same cases through a live server."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from support.inprocess import serving_in_process
from support.models import IR_VERSION, identity_classifier, write_model

from onnxplain.client import Client, TopK
from onnxplain.server.errors import FailedPrecondition, Unavailable
from onnxplain.server.repository import loader
from onnxplain.server.repository.config import ModelConfig
from onnxplain.server.repository.loader import load_model, load_time_limit
from onnxplain.server.repository.registry import ModelRegistry, scan_repository
from onnxplain.server.repository.safety import sort_nodes
from onnxplain.server.settings import DEFAULT_MODEL_LOAD_TIMEOUT_S, ServerSettings

# Generous: how long a test waits for something that happens at once when the code is right.
WAIT_SECONDS = 60.0


# ---- version folders ----------------------------------------------------------------------------------------------


def test_only_ascii_digit_folders_are_versions(tmp_path: Path) -> None:
    model = identity_classifier()
    for version in ("1", "12", "²", "٣", "v1", "01x", "1" * 19, ".hidden"):
        write_model(tmp_path, "digits", model, version=version)
    (tmp_path / "digits" / "7").mkdir()  # a version folder without its model (yet)
    sources, skipped = scan_repository(tmp_path)
    assert sorted(source.version for source in sources) == ["1", "12"]
    assert {path.name: reason for path, reason in skipped.items()} == {
        **dict.fromkeys(
            ("²", "٣", "v1", "01x", "1" * 19), "not a version: version folders are named by 1 to 18 digits 0-9"
        ),
        "7": "the version folder has no model.onnx",
    }


def test_a_model_folder_whose_name_is_not_text_is_skipped(tmp_path: Path) -> None:
    write_model(tmp_path, "plain", identity_classifier())
    os.makedirs(os.fsencode(tmp_path) + b"/caf\xe9/1")
    sources, skipped = scan_repository(tmp_path)
    assert [source.name for source in sources] == ["plain"]
    assert list(skipped.values()) == ["a model's name must be UTF-8 text"]


def test_skipped_folders_are_logged_once_and_the_model_serves(tmp_path: Path, caplog) -> None:
    write_model(tmp_path, "digits", identity_classifier())
    write_model(tmp_path, "digits", identity_classifier(), version="²")
    settings = ServerSettings(model_repository=tmp_path)
    with caplog.at_level(logging.WARNING, logger="onnxplain.server.repository"):
        registry = ModelRegistry(tmp_path, lambda source: load_model(source, settings))
        registry.rescan()
        statuses = registry.load_latest_versions()
    assert [(s.name, s.version, s.state) for s in statuses] == [("digits", "1", "ready")]
    assert registry.versions("digits") == ["1"]
    skipped = [record.getMessage() for record in caplog.records if "²" in record.getMessage()]
    assert len(skipped) == 1
    assert "not a version" in skipped[0]


# ---- graphs with cycles ---------------------------------------------------------------------------------------------


def rows_graph(extra_nodes: list, output: str = "scores") -> helper.GraphProto:
    return helper.make_graph(
        [helper.make_node("ReduceMean", ["input"], ["rows"], axes=[3], keepdims=0), *extra_nodes],
        "rows",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 4, 8])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", 4])],
    )


def looping_identities() -> helper.GraphProto:
    """scores = Identity(loop), loop = Identity(scores): following the output's producers never ends."""
    return rows_graph(
        [helper.make_node("Identity", ["loop"], ["scores"]), helper.make_node("Identity", ["scores"], ["loop"])]
    )


def test_a_cycle_is_found_and_named() -> None:
    problem = sort_nodes(looping_identities())
    assert problem == (
        "the graph has a cycle (ONNX graphs must be acyclic): nodes 'scores' (Identity), 'loop' (Identity) are on it "
        "or fed by it"
    )


def test_a_node_reading_its_own_output_is_a_cycle() -> None:
    graph = rows_graph([helper.make_node("Add", ["rows", "scores"], ["scores"], name="self")])
    assert "nodes 'self' (Add)" in sort_nodes(graph)


def test_an_acyclic_graph_in_any_node_order_passes() -> None:
    graph = rows_graph(
        [helper.make_node("Relu", ["flat"], ["scores"]), helper.make_node("Flatten", ["rows"], ["flat"])]
    )
    assert sort_nodes(graph) is None


def test_a_cycle_through_a_subgraph_reading_the_outer_graph_is_found() -> None:
    # The If's branch reads `later`, which a node after the If computes from the If's own output.
    branch = helper.make_graph(
        [helper.make_node("Identity", ["later"], ["out"])],
        "branch",
        [],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
    )
    graph = rows_graph(
        [
            helper.make_node("If", ["condition"], ["chosen"], then_branch=branch, else_branch=branch, name="if"),
            helper.make_node("Relu", ["chosen"], ["later"], name="relu"),
            helper.make_node("Identity", ["rows"], ["scores"]),
        ]
    )
    assert "nodes 'if' (If), 'relu' (Relu)" in sort_nodes(graph)


def test_a_cycle_inside_a_subgraph_is_found() -> None:
    branch = helper.make_graph(
        [helper.make_node("Identity", ["b"], ["a"]), helper.make_node("Identity", ["a"], ["b"])],
        "looping_branch",
        [],
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, None)],
    )
    graph = rows_graph(
        [
            helper.make_node("If", ["condition"], ["chosen"], then_branch=branch, else_branch=branch),
            helper.make_node("Identity", ["rows"], ["scores"]),
        ]
    )
    assert sort_nodes(graph).startswith("subgraph 'looping_branch' has a cycle")


def test_a_model_with_a_cycle_is_refused_at_once(tmp_path: Path) -> None:
    model = helper.make_model(looping_identities(), opset_imports=[helper.make_opsetid("", 13)], ir_version=IR_VERSION)
    write_model(tmp_path, "cycle", model.SerializeToString())
    settings = ServerSettings(model_repository=tmp_path)
    registry = ModelRegistry(tmp_path, lambda source: load_model(source, settings))
    (status,) = registry.load_latest_versions()
    assert status.state == "unavailable"
    assert status.reason.startswith("the graph has a cycle")


# ---- graphs with nodes out of order ---------------------------------------------------------------------------------


def small_cnn(order: list[int]) -> onnx.ModelProto:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm, its nodes written in `order`."""
    rng = np.random.default_rng(5)
    nodes = [
        helper.make_node("Conv", ["input", "kernel"], ["conv"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["conv"], ["features"], name="relu"),
        helper.make_node("GlobalAveragePool", ["features"], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "dense"], ["scores"], transB=1, name="dense"),
    ]
    graph = helper.make_graph(
        [nodes[index] for index in order],
        "small_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 4])],
        [
            numpy_helper.from_array(rng.normal(size=(6, 3, 3, 3)).astype(np.float32), "kernel"),
            numpy_helper.from_array(rng.normal(size=(4, 6)).astype(np.float32), "dense"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=IR_VERSION)


SHUFFLED = [3, 0, 4, 2, 1]


def test_nodes_out_of_order_are_sorted_as_onnx_requires() -> None:
    model = small_cnn(SHUFFLED)
    with pytest.raises(onnx.checker.ValidationError, match="topologically sorted"):
        onnx.checker.check_model(model)
    assert sort_nodes(model.graph) is None
    onnx.checker.check_model(model)
    assert [node.name for node in model.graph.node] == ["conv", "relu", "pool", "flatten", "dense"]


def test_a_graph_in_order_is_left_as_it_is() -> None:
    # Two branches written one after the other: a breadth-first order would interleave them.
    graph = rows_graph(
        [
            helper.make_node("Relu", ["rows"], ["left"]),
            helper.make_node("Neg", ["left"], ["left_negated"]),
            helper.make_node("Sigmoid", ["rows"], ["right"]),
            helper.make_node("Add", ["left_negated", "right"], ["scores"]),
        ]
    )
    written = graph.SerializeToString()
    assert sort_nodes(graph) is None
    assert graph.SerializeToString() == written


def test_nodes_out_of_order_inside_a_subgraph_are_sorted() -> None:
    branch = helper.make_graph(
        [helper.make_node("Neg", ["doubled"], ["out"]), helper.make_node("Add", ["rows", "rows"], ["doubled"])],
        "branch",
        [],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
    )
    graph = rows_graph(
        [
            helper.make_node("Identity", ["chosen"], ["scores"]),
            helper.make_node("If", ["condition"], ["chosen"], then_branch=branch, else_branch=branch),
        ]
    )
    graph.input.append(helper.make_tensor_value_info("condition", TensorProto.BOOL, []))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=IR_VERSION)
    assert sort_nodes(model.graph) is None
    onnx.checker.check_model(model)
    assert [node.op_type for node in model.graph.node] == ["ReduceMean", "If", "Identity"]
    for attribute in model.graph.node[1].attribute:
        assert [node.op_type for node in attribute.g.node] == ["Add", "Neg"]


def test_a_model_with_nodes_out_of_order_serves_as_the_ordered_one(tmp_path: Path) -> None:
    """ONNX Runtime runs it either way; the gradient methods walk the graph kept at load, sorted there."""
    ordered = write_model(tmp_path, "ordered", small_cnn([0, 1, 2, 3, 4]).SerializeToString())
    write_model(tmp_path, "shuffled", small_cnn(SHUFFLED).SerializeToString())
    images = np.random.default_rng(6).random((2, 3, 8, 8), dtype=np.float32)
    session = ort.InferenceSession(str(ordered), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"input": images})
    with serving_in_process(tmp_path) as served, Client(served.target) as client:
        assert [s.state for s in served.registry.statuses()] == ["ready", "ready"]
        scores = [prediction.scores for prediction in client.predict("shuffled", list(images))]
        np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
        for method in ("saliency", "grad_cam", "integrated_gradients"):
            maps = {
                name: client.explain(name, list(images), method=method, target=TopK(2))
                for name in ("ordered", "shuffled")
            }
            for ordered_map, shuffled_map in zip(maps["ordered"], maps["shuffled"], strict=True):
                assert shuffled_map.targets == ordered_map.targets
                np.testing.assert_allclose(shuffled_map.attribution, ordered_map.attribution, rtol=1e-5, atol=1e-7)


# ---- loads that never finish ---------------------------------------------------------------------------------------


@pytest.fixture
def blocked_sessions(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Session creation of models named 'never' waits for the returned event; set when the test ends."""
    release = threading.Event()
    create = loader.ModelSession

    def blocking(path: Path, **options):
        if path.parent.parent.name == "never":
            release.wait()
        return create(path, **options)

    monkeypatch.setattr(loader, "ModelSession", blocking)
    yield release
    release.set()


def load_threads(name: str) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == f"onnxplain-load-{name}:1"]


def test_a_load_past_its_time_limit_is_abandoned_and_never_installed(
    tmp_path: Path, blocked_sessions: threading.Event
) -> None:
    write_model(tmp_path, "never", identity_classifier())
    settings = ServerSettings(model_repository=tmp_path, model_load_timeout_s=0.5)
    registry = ModelRegistry(tmp_path, lambda source: load_model(source, settings))
    (status,) = registry.load_latest_versions()
    assert (status.state, status.reason) == (
        "unavailable",
        "load did not finish within 0.5 s (--model-load-timeout-s); it was abandoned",
    )
    (abandoned,) = load_threads("never")
    assert abandoned.daemon, "an abandoned load must not keep the process from exiting"

    blocked_sessions.set()
    abandoned.join(WAIT_SECONDS)
    assert not abandoned.is_alive()
    assert registry.status("never", "1").state == "unavailable"
    with pytest.raises(Unavailable, match="load did not finish"):
        registry.get("never")


def test_a_retry_while_the_abandoned_load_runs_is_refused_and_starts_no_thread(
    tmp_path: Path, blocked_sessions: threading.Event
) -> None:
    write_model(tmp_path, "never", identity_classifier())
    # A short limit for the load that blocks; the default one (minutes) for the load after the release.
    settings = {"limit": ServerSettings(model_repository=tmp_path, model_load_timeout_s=0.5)}
    registry = ModelRegistry(tmp_path, lambda source: load_model(source, settings["limit"]))
    registry.load_latest_versions()
    (abandoned,) = load_threads("never")

    for _ in range(3):
        with pytest.raises(FailedPrecondition) as refused:
            registry.load("never")
        assert str(refused.value) == (
            "model 'never' version 1 failed to load: the load abandoned earlier (past its time limit) is still "
            "running; a new load of this version starts only once it ends"
        )
    assert load_threads("never") == [abandoned]
    status = registry.status("never", "1")
    assert (status.state, "still running" in status.reason) == ("unavailable", True)

    settings["limit"] = ServerSettings(model_repository=tmp_path)
    blocked_sessions.set()
    abandoned.join(WAIT_SECONDS)
    assert not abandoned.is_alive()
    assert registry.load("never").state == "ready"
    registry.get("never")


def test_an_abandoned_session_creation_is_cancelled_and_its_thread_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A creation that would go on for ever (one session after another, until ONNX Runtime refuses one) stops once
    the load is abandoned: the loader sets the load cancellation flag on the options it gave the session."""
    write_model(tmp_path, "never", identity_classifier())
    create = loader.ModelSession
    cancelled: list[Exception] = []

    def endless(path: Path, **options):
        while True:
            try:
                create(path, **options)
            except Exception as error:  # ONNX Runtime's MODEL_LOAD_CANCELED
                cancelled.append(error)
                raise

    monkeypatch.setattr(loader, "ModelSession", endless)
    settings = ServerSettings(model_repository=tmp_path, model_load_timeout_s=0.5)
    registry = ModelRegistry(tmp_path, lambda source: load_model(source, settings))
    (status,) = registry.load_latest_versions()
    assert "it was abandoned" in status.reason
    (abandoned,) = load_threads("never")
    abandoned.join(WAIT_SECONDS)
    assert not abandoned.is_alive()
    assert "cancel" in str(cancelled[0]).lower()


def test_a_slow_model_does_not_hold_back_the_others(tmp_path: Path, blocked_sessions: threading.Event) -> None:
    # "never" sorts first: loaded one after the other, "quick" would wait for it.
    write_model(tmp_path, "never", identity_classifier())
    write_model(tmp_path, "quick", identity_classifier())
    settings = ServerSettings(model_repository=tmp_path)
    quick_loaded = threading.Event()

    def load(source):
        model = load_model(source, settings)
        if source.name == "quick":
            quick_loaded.set()
        return model

    registry = ModelRegistry(tmp_path, load)
    start_up = threading.Thread(target=registry.load_latest_versions, daemon=True)
    start_up.start()
    assert quick_loaded.wait(WAIT_SECONDS), "quick waited for the blocked model"
    assert registry.status("never", "1").state == "loading"
    blocked_sessions.set()
    start_up.join(WAIT_SECONDS)
    assert [(s.name, s.state) for s in registry.statuses()] == [("never", "ready"), ("quick", "ready")]


def test_the_config_may_lower_the_time_limit_but_not_raise_it(tmp_path: Path) -> None:
    settings = ServerSettings(model_repository=tmp_path, model_load_timeout_s=60)
    assert load_time_limit(ModelConfig(load_timeout_s=5), settings) == (5, "load_timeout_s in config.yaml")
    assert load_time_limit(ModelConfig(load_timeout_s=600), settings) == (60, "--model-load-timeout-s")
    assert load_time_limit(ModelConfig(), settings) == (60, "--model-load-timeout-s")
    assert ServerSettings(model_repository=tmp_path).model_load_timeout_s == DEFAULT_MODEL_LOAD_TIMEOUT_S == 300
