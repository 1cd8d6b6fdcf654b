"""A repository that cannot hurt the server, through a live `onnxplain serve`.

One repository holds a model of each hostile kind beside two good ones: folders that are not versions, a model
folder whose name is not text, a graph with a cycle, a model whose session creation never finishes, configs with
NaN, infinite, huge and endlessly long numbers, a labels file that is a pipe, and an absurd instance count. Each bad
model must be unavailable with a reason naming what is wrong, while the good ones serve, health says SERVING, and
SIGTERM still stops the process. The server logs as text, where a caller's newline must not start a log record.

The never-ending load is real session creation held on an event nobody sets: a sitecustomize module on the
server's PYTHONPATH wraps ONNX Runtime session creation for models named "never".
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from onnx import TensorProto, helper
from support.models import IR_VERSION, identity_classifier, write_model
from support.servers import RunningServer, start_server
from support.waiting import wait_until

from onnxplain.client import Client, ModelStatus, OnnxplainError

IMAGE = np.arange(32, dtype=np.float32).reshape(1, 4, 8)
# A config that sets this model's load time limit below the server's default.
NEVER_LIMIT_S = 1
SESSION_HOOK = textwrap.dedent(
    """
    import threading

    from onnxplain.server.repository import loader

    _create = loader.ModelSession


    def _never_for_models_named_never(path, **options):
        if path.parent.parent.name == "never":
            threading.Event().wait()
        return _create(path, **options)


    loader.ModelSession = _never_for_models_named_never
    """
)
# config.yaml text of each model that must be refused, and what its reason must say.
BAD_CONFIGS = {
    "nan_scale": ("preprocessing:\n  scale: .nan\n", "preprocessing.scale must be a finite number"),
    "inf_mean": ("preprocessing:\n  mean: [.inf, 0, 0]\n", "preprocessing.mean must be a finite number"),
    "huge_scale": ("preprocessing:\n  scale: 1.0e+308\n", "preprocessing.scale must be a finite number"),
    "huge_integer": ("max_batch_size: 1" + "0" * 100_000 + "\n", "max_batch_size is a number of 100001 characters"),
    # Base 60 in YAML 1.1: converting these digits takes time quadratic in their count (minutes for this one).
    "base_60": ("instance_count: " + ":".join(["59"] * 300_000) + "\n", "instance_count is a number of"),
    "many_instances": ("instance_count: 1000000\n", "instance_count must be an integer from 1 to 64"),
    "json_nan": (None, "preprocessing.scale must be a finite number"),
    "piped_labels": ("labels_file: names.txt\n", "labels_file: names.txt is not a regular file"),
}


@dataclass
class Hostile:
    server: RunningServer
    client: Client
    statuses: dict[str, ModelStatus]


def rows_with_a_cycle() -> bytes:
    """scores = Identity(loop), loop = Identity(scores): a walk from the output through its producers never ends."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input"], ["rows"], axes=[3], keepdims=0),
            helper.make_node("Identity", ["loop"], ["scores"]),
            helper.make_node("Identity", ["scores"], ["loop"]),
        ],
        "cycle",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 4, 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=IR_VERSION)
    return model.SerializeToString()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    root = tmp_path_factory.mktemp("repository")
    hook = tmp_path_factory.mktemp("hook")
    (hook / "sitecustomize.py").write_text(SESSION_HOOK)
    good = identity_classifier()

    write_model(root, "plain", good)
    write_model(root, "versions", good)
    for name in ("²", "v1", "01x", "٣"):
        write_model(root, "versions", good, version=name)
    os.makedirs(os.fsencode(root) + b"/not_utf8_\xff/1")
    write_model(root, "cycle", rows_with_a_cycle())
    write_model(root, "never", good, {"load_timeout_s": NEVER_LIMIT_S})
    for name, (text, _) in BAD_CONFIGS.items():
        write_model(root, name, good)
        if text is not None:
            (root / name / "config.yaml").write_text(text)
    (root / "json_nan" / "config.json").write_text('{"preprocessing": {"scale": NaN}}')
    os.mkfifo(root / "piped_labels" / "names.txt")

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])))
        server = start_server(root, "--log-format", "text")
    try:
        with Client(server.target, timeout=60) as client:
            yield Hostile(server, client, {status.name: status for status in client.models()})
    finally:
        assert server.stop() == 0, "SIGTERM did not stop the server:\n" + "".join(server.output[-40:])


def assert_unavailable(hostile: Hostile, name: str, reason: str) -> None:
    status = hostile.statuses[name]
    assert status.state == "unavailable"
    assert reason in status.reason
    with pytest.raises(OnnxplainError) as refused:
        hostile.client.predict(name, IMAGE)
    assert refused.value.code is grpc.StatusCode.UNAVAILABLE
    assert reason in refused.value.message


def test_the_server_is_serving_and_the_good_models_answer(hostile: Hostile) -> None:
    with grpc.insecure_channel(hostile.server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    for name in ("plain", "versions"):
        assert hostile.statuses[name].state == "ready"
        np.testing.assert_allclose(hostile.client.predict(name, IMAGE).scores, IMAGE[0].mean(axis=1), rtol=1e-6)


def test_folders_that_are_not_versions_are_skipped_with_a_log_line(hostile: Hostile) -> None:
    assert [(s.name, s.version) for s in hostile.client.models() if s.name == "versions"] == [("versions", "1")]
    metadata = hostile.client.metadata("versions")
    assert (metadata.version, metadata.versions) == ("1", ["1"])
    for name in ("²", "v1", "01x", "٣"):
        lines = [line for line in hostile.server.output if f"versions/{name}: not a version" in line]
        assert len(lines) == 1, name


def test_a_model_folder_whose_name_is_not_text_is_skipped(hostile: Hostile) -> None:
    assert not any(name.startswith("not_utf8") for name in hostile.statuses)
    assert any("a model's name must be UTF-8 text" in line for line in hostile.server.output)


def test_a_graph_with_a_cycle_is_unavailable_with_the_reason(hostile: Hostile) -> None:
    assert_unavailable(hostile, "cycle", "the graph has a cycle (ONNX graphs must be acyclic)")


def test_a_load_that_never_finishes_is_abandoned_at_its_time_limit(hostile: Hostile) -> None:
    assert_unavailable(
        hostile, "never", f"load did not finish within {NEVER_LIMIT_S} s (load_timeout_s in config.yaml)"
    )


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_config_values_are_checked_at_load_naming_the_key(hostile: Hostile, name: str) -> None:
    assert_unavailable(hostile, name, BAD_CONFIGS[name][1])


def test_a_newline_in_a_model_name_cannot_forge_a_log_record(hostile: Hostile) -> None:
    forged = "2099-01-01 00:00:00,000 INFO onnxplain.requests: forged record"
    with pytest.raises(OnnxplainError) as refused:
        hostile.client.predict(f"marker-one\n{forged}", IMAGE)
    assert refused.value.code is grpc.StatusCode.NOT_FOUND
    (line,) = wait_until(
        lambda: [line for line in hostile.server.output if "marker-one" in line], what="the call's log line"
    )
    assert "marker-one\\n2099-01-01" in line
    assert not any(line.startswith("2099-01-01") for line in hostile.server.output)


def test_a_huge_model_name_is_cut_in_the_message_and_the_log(hostile: Hostile) -> None:
    name = "marker-two" + "x" * 1024 * 1024
    with pytest.raises(OnnxplainError) as refused:
        hostile.client.predict(name, IMAGE)
    assert refused.value.code is grpc.StatusCode.NOT_FOUND
    assert "'marker-two" in refused.value.message
    assert len(refused.value.message) < 3000
    (line,) = wait_until(
        lambda: [line for line in hostile.server.output if "marker-two" in line], what="the call's log line"
    )
    assert len(line) < 5000
