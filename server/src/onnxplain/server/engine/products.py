"""Large float32 matrix products on ONNX Runtime's CPU threads.

The server keeps numpy's BLAS to one thread, so that it never spins against ONNX Runtime's threads. Some products
are big and run while the model's session is idle between batches: RISE folds every class's scores into its maps
with one (classes x masks) by (masks x pixels) product. A one-node MatMul graph runs them on as many threads as the
model's sessions have: 1000 x 128 by 128 x 50176 took 113 ms on ONNX Runtime's 2 threads against 172 ms in numpy's
single-thread BLAS (412 ms with the transposed scores as RISE held them; 2-core AMD EPYC, medians of 5).
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from onnxplain.server.engine.session import session_options


def matrix_product(left: np.ndarray, right: np.ndarray, threads: int) -> np.ndarray:
    """left (m, k) @ right (k, n) in float32."""
    left = np.ascontiguousarray(left, dtype=np.float32)
    right = np.ascontiguousarray(right, dtype=np.float32)
    (product,) = _session(threads).run(None, {"left": left, "right": right})
    return product


@functools.lru_cache(maxsize=4)
def _session(threads: int) -> ort.InferenceSession:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["left", "right"], ["product"])],
        "matrix_product",
        [
            helper.make_tensor_value_info("left", TensorProto.FLOAT, ["m", "k"]),
            helper.make_tensor_value_info("right", TensorProto.FLOAT, ["k", "n"]),
        ],
        [helper.make_tensor_value_info("product", TensorProto.FLOAT, ["m", "n"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    return ort.InferenceSession(model.SerializeToString(), session_options(threads), ["CPUExecutionProvider"])
