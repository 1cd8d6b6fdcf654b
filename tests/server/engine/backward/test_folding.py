"""Folding the shape arithmetic once the image size is fixed (prepare.prepare_forward): what it folds must not depend on
the batch. A dimension that is a multiple of the batch (a Swin's attention windows, batch x windows along one axis)
is not the batch: the window count read back from it is the batch again, not a constant."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch
from support.models import export
from support.vjp import IR_VERSION
from torch import nn

from onnxplain.server.engine.backward.prepare import prepare_forward

SAMPLE = (4, 8, 8)


class Windows(nn.Module):
    """Each image cut into 4 windows along the batch axis, and the batch read back from that axis, as torchvision's
    shifted window attention does (`attn.view(x.size(0) // num_windows, num_windows, ...)`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        windows = x.reshape(-1, 4, 16)  # (4 x batch, 4, 16)
        per_image = windows.view(windows.size(0) // 4, 4, 4, 16)
        return (per_image * torch.arange(16.0)).mean(dim=(2, 3))


def test_a_multiple_of_the_batch_is_not_folded_as_the_batch() -> None:
    model = onnx.load_from_string(export(Windows(), (1, *SAMPLE), opset=17))
    assert "Div" in {node.op_type for node in model.graph.node}
    prepared = prepare_forward(model, "input", SAMPLE)
    prepared.ir_version = IR_VERSION
    session = ort.InferenceSession(prepared.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in (1, 2, 3, 5):
        images = np.random.default_rng(batch).standard_normal((batch, *SAMPLE)).astype(np.float32)
        (scores,) = session.run(None, {"input": images})
        np.testing.assert_allclose(scores, Windows()(torch.from_numpy(images)).numpy(), rtol=1e-5, atol=1e-6)
