"""The load-time support scan (engine/backward/support.py): plain CAM needs the default feature map read only through
global average pooling; a vision transformer's tokens are no default feature map."""

from __future__ import annotations

import onnx
from support.models import export
from support.zoo import ResNetStyle, VGGStyle, ViTStyle

from onnxplain.server.engine.backward.support import CAM_HEAD, FEATURE_MAP, INPUT_GRADIENT, support_problems

SAMPLE = (3, 32, 32)


def problems(module) -> dict[str, str | None]:
    model = onnx.load_from_string(export(module, (1, *SAMPLE)))
    return support_problems(model, "input", "scores", SAMPLE)


def test_plain_cam_needs_a_global_average_pooled_head() -> None:
    assert problems(ResNetStyle())[CAM_HEAD] is None
    flattened = problems(VGGStyle())  # Flatten -> dense: the gradient differs per position
    assert flattened[FEATURE_MAP] is None
    assert "cam needs a global-average-pool + dense head" in flattened[CAM_HEAD]
    assert "Flatten" in flattened[CAM_HEAD]


def test_a_vision_transformer_has_no_default_feature_map() -> None:
    """Its tokens are 3-D; the 4-D tensors inside its attention (heads) are no image map."""
    found = problems(ViTStyle())
    assert found[INPUT_GRADIENT] is None
    assert "no 4-D feature map feeds the classifier head" in found[FEATURE_MAP]
