"""A real client in another language: tests/node/explain.js (Node.js, @grpc/grpc-js and @grpc/proto-loader from npm,
the .proto files loaded at run time) against a live server.

Its numbers are checked against the Python client's on the same requests and against ONNX Runtime, so a wrong
field number, dtype or byte order on either side fails here. Node.js missing is a failure, not a skip: the README
promises this client works.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from support.servers import RunningServer

from onnxplain.client import Client
from onnxplain.server.demo import REPOSITORY, SAMPLES

NODE_PROJECT = Path(__file__).resolve().parents[1] / "node"
IMAGE = SAMPLES / "digit_3_clean.png"


@pytest.fixture(scope="module")
def summary(demo_server: RunningServer) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is not installed: this test runs tests/node/explain.js with `node` (Debian: nodejs, npm)")
    if not (NODE_PROJECT / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("the Node.js packages are missing: run `npm ci --prefix tests/node` (`make test` does)")
    command = [node, str(NODE_PROJECT / "explain.js"), demo_server.target, str(IMAGE)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_node_client_predicts_like_the_python_client(summary: dict[str, Any], demo_client: Client) -> None:
    reference = demo_client.predict("digits", IMAGE, top_k=3)
    assert (summary["model"], summary["version"]) == ("digits", "1")
    assert [c["class_index"] for c in summary["top"]] == [c.class_index for c in reference.top]
    assert summary["top"][0]["label"] == "three"
    np.testing.assert_allclose(summary["scores"], reference.scores, rtol=1e-5, atol=1e-5)


def test_node_client_gets_the_occlusion_map(summary: dict[str, Any], demo_client: Client) -> None:
    reference = demo_client.explain("digits", IMAGE, method="occlusion", window=4)
    assert (summary["method"], summary["window"], summary["target"]) == ("occlusion", [4, 4], 3)
    assert summary["map_shape"] == [28, 28]
    np.testing.assert_allclose(np.reshape(summary["map"], (28, 28)), reference.attribution, rtol=1e-5, atol=1e-6)


def test_node_client_speaks_the_inference_protocol(summary: dict[str, Any]) -> None:
    oip = summary["inference_protocol"]
    assert oip["platform"] == "onnxruntime_onnx"
    assert oip["input"] == {"name": "image", "datatype": "FP32", "shape": [-1, 1, 28, 28]}
    assert oip["output"] == {"name": "logits", "datatype": "FP32", "shape": [1, 10]}
    # The script's tensor: a diagonal stroke of ones from (4, 4) to (23, 23).
    stroke = np.zeros((1, 1, 28, 28), np.float32)
    stroke[0, 0, range(4, 24), range(4, 24)] = 1.0
    session = ort.InferenceSession(str(REPOSITORY / "digits" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    (reference,) = session.run(None, {"image": stroke})
    np.testing.assert_allclose(oip["logits"], reference[0], rtol=1e-5, atol=1e-5)
