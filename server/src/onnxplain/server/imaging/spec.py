"""The preprocessing a model declares in its config.yaml, as an immutable value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ColorOrder = Literal["rgb", "bgr", "gray"]
Layout = Literal["NCHW", "NHWC"]
Interpolation = Literal["linear", "nearest", "cubic", "area"]
# Pixels 0-255 to [0, 1]: what a float input takes unless its config says otherwise.
FLOAT_INPUT_SCALE = 1.0 / 255.0


@dataclass(frozen=True)
class PreprocessingSpec:
    """How an encoded image becomes one model input tensor (without the batch dimension).

    Steps, in order: decode -> colour order -> resize -> center crop -> float * scale -> (x - mean) / std -> layout.
    `resize` is () for none, (s,) to resize the shorter side to s keeping the aspect ratio, or (height, width).
    `center_crop` is () for none or (height, width). `mean`/`std` have one value or one per channel.
    """

    resize: tuple[int, ...] = ()
    center_crop: tuple[int, ...] = ()
    color: ColorOrder = "rgb"
    # None in a config that names no scale, until the model is loaded: then FLOAT_INPUT_SCALE for a float input, 1 for
    # an integer one (uint8 pixels, the normalisation inside the graph).
    scale: float | None = FLOAT_INPUT_SCALE
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    # None until the model is loaded: then the model's own layout, unless the config names one.
    layout: Layout | None = None
    interpolation: Interpolation = "linear"

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3
