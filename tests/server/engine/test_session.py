"""Models stamped with a newer IR version than ONNX Runtime reads still serve (onnx >= 1.23 stamps IR 14)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from support.models import SmallCNN, export

from onnxplain.server.engine.session import ModelSession


def test_a_model_with_a_too_new_ir_version_is_loaded(tmp_path) -> None:
    model = onnx.load_from_string(export(SmallCNN(), (1, 3, 8, 8)))
    model.ir_version = onnx.IR_VERSION  # newest this onnx knows, above what ONNX Runtime reads
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        too_new = False
    except Exception:
        too_new = True
    assert too_new, "this onnx/onnxruntime pair no longer disagrees on IR versions; drop this test"
    session = ModelSession(
        path, providers=["CPUExecutionProvider"], threads=1, input_name="input", output_name="scores", fixed_batch=None
    )
    scores = session.run(np.zeros((2, 3, 8, 8), np.float32))
    assert scores.shape == (2, 5)
