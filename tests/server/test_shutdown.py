"""Shutdown: at the end of the grace the work still running is cancelled and the process exits, and a SIGTERM while a
model's load never ends still stops the process.

The work is made endless by construction (RISE with 50 million masks; a model whose graph loops 2^62 times), so an
exit can only come from the shutdown; the waits are generous bounds on a failing test, never latencies asserted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
from onnx import TensorProto, helper
from support.models import IR_VERSION, write_model
from support.servers import start_server

from onnxplain.client import Client, OnnxplainError
from onnxplain.server.demo import REPOSITORY, SAMPLES

PATIENCE_S = 60
ENDLESS_RISE = {"method": "rise", "num_masks": 50_000_000}


def test_work_still_running_at_the_end_of_the_grace_is_cancelled_and_the_process_exits() -> None:
    server = start_server(REPOSITORY, "--shutdown-grace-s", "1", "--max-forward-passes", str(10**9))
    outcome: list[BaseException] = []
    with Client(server.target, timeout=PATIENCE_S) as client:
        events = iter(client.explain_stream("digits", SAMPLES / "digit_3_clean.png", **ENDLESS_RISE))
        first = next(events)  # the explanation is computing
        assert first.passes_total == ENDLESS_RISE["num_masks"]

        def read_to_the_end() -> None:
            try:
                for _ in events:
                    pass
            except OnnxplainError as error:
                outcome.append(error)

        reader = threading.Thread(target=read_to_the_end)
        reader.start()
        server.process.send_signal(signal.SIGTERM)
        try:
            assert server.process.wait(PATIENCE_S) == 0
        finally:
            server.stop()
        reader.join(PATIENCE_S)
    log = "".join(server.output)
    assert outcome and outcome[0].code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE), outcome
    assert '"rpc": "ExplainStream"' in log and '"code": "CANCELLED"' in log, log[-2000:]
    assert "still running" not in log, "the work stopped at its cancellation: the exit did not have to leave it"


def looping_classifier() -> bytes:
    """scores = the mean of the image, twice, after a Loop of 2^62 iterations: loading it (its warm-up run) never
    ends."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["go_in"], ["go_out"]), helper.make_node("Identity", ["x_in"], ["x_out"])],
        "body",
        [
            helper.make_tensor_value_info("iteration", TensorProto.INT64, []),
            helper.make_tensor_value_info("go_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_in", TensorProto.FLOAT, ["batch", 1, 4, 4]),
        ],
        [
            helper.make_tensor_value_info("go_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_out", TensorProto.FLOAT, ["batch", 1, 4, 4]),
        ],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Loop", ["trips", "go", "input"], ["looped"], body=body),
            helper.make_node("ReduceMean", ["looped"], ["mean"], axes=[1, 2, 3], keepdims=0),
            helper.make_node("Unsqueeze", ["mean", "last"], ["column"]),
            helper.make_node("Concat", ["column", "column"], ["scores"], axis=1),
        ],
        "looping",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 4, 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 2])],
        [
            helper.make_tensor("trips", TensorProto.INT64, [], [2**62]),
            helper.make_tensor("go", TensorProto.BOOL, [], [True]),
            helper.make_tensor("last", TensorProto.INT64, [1], [1]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)
    return model.SerializeToString()


@pytest.mark.timeout(2 * PATIENCE_S)
def test_sigterm_while_a_model_load_never_ends_stops_the_process(tmp_path: Path) -> None:
    write_model(tmp_path, "loop", looping_classifier())
    command = [sys.executable, "-m", "onnxplain.client.cli.main", "serve", "--model-repository", str(tmp_path)]
    command += ["--port", "0", "--threads", "1", "--shutdown-grace-s", "1"]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    output: list[str] = []
    try:
        for line in process.stdout:
            output.append(line)
            if "onnxplain listening on" in line:
                break
        process.send_signal(signal.SIGTERM)
        assert process.wait(PATIENCE_S) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output.append(process.stdout.read())
    log = "".join(output)
    assert "onnxplain listening on" in log, log
    # Neither ready nor a load outcome: the SIGTERM came while the load was running, and it did not end.
    assert "onnxplain ready" not in log and "model loop version 1" not in log, log
