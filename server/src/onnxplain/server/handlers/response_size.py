"""How large a response will be, known before the work that fills it: a response above --max-message-bytes cannot be
sent, so it is refused with RESOURCE_EXHAUSTED before any method pass instead of failing to encode after all of them.

The bounds count what api/convert.py puts on the wire: float32 values at 4 bytes, PNG overlays at their stored
(uncompressed) size, names and labels at their UTF-8 length, and every field's protobuf framing at its largest. They
are upper bounds, within a few hundred bytes per image and target of the encoded size for float maps. ExplainStream's
partial maps are messages of their own, one target's map each, so they are smaller than the final response.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from onnxplain.server.errors import ResourceExhausted
from onnxplain.server.handlers.inputs import PreparedImage
from onnxplain.server.imaging.class_map import _LEGEND_ROW, _LEGEND_WIDTH
from onnxplain.server.imaging.layout import spatial_size
from onnxplain.server.methods.base import AttributionMethod
from onnxplain.server.repository.model import LoadedModel

# A field holding bytes or a message: its tag (field numbers below 16 take one byte) and its length (five bytes up to
# 32 GiB). A varint field (an int64, a class index) takes the tag and at most ten bytes.
_FIELD = 6
_VARINT = 11
# A Tensor around its data: the dtype, the shape (at most four dimensions of ten bytes, packed) and the data's field.
_TENSOR = 2 + _FIELD + 4 * 10 + _FIELD
# Geometry: eight int64 fields; Cost: four int64 and a double; a target's score: a float.
_GEOMETRY = 8 * _VARINT
_COST = 4 * _VARINT + 9
_FLOAT = 5
# A parameter the method fills in per image (a window, a pair of bounds, the name 'client') takes at most this much.
_FILLED_PARAMETER = 64
# PNG stores rows of 3-byte BGR pixels after a filter byte; deflate's stored blocks, zlib's and the chunks' framing
# (8 KiB IDAT chunks in OpenCV) add under 0.2 % and a few headers, bounded here by 1/128 and 1 KiB.
_PNG_CHANNELS = 3
_PNG_HEADERS = 1024


@dataclass(frozen=True)
class _SideOutputs:
    """What a method returns beside its maps, per image."""

    # The (H, W) int32 segments it attributed over.
    segments: bool = False
    # Extras shaped like the input's (H, W), by name.
    planes: tuple[str, ...] = ()
    # Extras of one value per target, by name.
    per_target: tuple[str, ...] = ()
    # renderings["clear"], the class picture drawn when the request renders.
    class_picture: bool = False


_SEGMENTS = _SideOutputs(segments=True)
# Methods not named here return their maps only (tests/server/test_response_size.py checks every method against it).
_SIDE_OUTPUTS = {
    "feature_ablation": _SEGMENTS,
    "kernel_shap": _SEGMENTS,
    "lime": _SEGMENTS,
    "clear": _SideOutputs(planes=("dominant_class", "dominant_response"), class_picture=True),
    "integrated_gradients": _SideOutputs(per_target=("convergence_delta",)),
}


def check_response_size(estimate: int, limit: int, rpc: str, advice: str) -> None:
    """RESOURCE_EXHAUSTED naming the estimate and the limit when the response cannot be sent; `advice` says what
    a smaller request would leave out."""
    if estimate > limit:
        raise ResourceExhausted(
            f"the {rpc} response would take up to {estimate} bytes, above the server's --max-message-bytes of "
            f"{limit}: {advice}"
        )


def explain_response_bytes(
    model: LoadedModel,
    method: AttributionMethod,
    params: dict[str, Any],
    images: Sequence[PreparedImage],
    target_counts: Sequence[int],
    num_scores: int,
    *,
    input_shaped: bool,
    original_maps: bool,
    rendered: bool,
) -> int:
    """Upper bound of the ExplainResponse (and of ExplainStream's result message): per image, `target_counts` maps of
    the input's (H, W) or, `input_shaped`, of its whole shape, each with its map over the original image when
    `original_maps` and an overlay PNG of the picture when `rendered`; the image's `num_scores` scores, its geometry
    and the method's side outputs; and the names, parameters and cost of the response."""
    side = _SIDE_OUTPUTS.get(method.name, _SideOutputs())
    label = _FIELD + max((len(text.encode()) for text in model.labels), default=0)
    total = _FIELD  # ExplainStreamResponse's result field around the response
    total += _texts(model.name, model.version, method.name, *model.session.providers)
    total += _FIELD + _COST + _parameters_bytes(params)
    for image, targets in zip(images, target_counts, strict=True):
        height, width = spatial_size(image.tensor.shape, model.signature.layout)
        geometry = image.geometry
        picture = (height, width) if geometry is None else (geometry.original_height, geometry.original_width)
        target = _FIELD + _VARINT + label + _FLOAT + _tensor(image.tensor.size if input_shaped else height * width)
        if original_maps and geometry is not None:
            target += _tensor(picture[0] * picture[1])
        if rendered:
            target += _FIELD + _png_bytes(*picture)
        total += _FIELD + targets * target + _tensor(num_scores) + _FIELD + _GEOMETRY
        total += _side_bytes(side, height * width, targets, picture, num_scores, rendered)
    return total


def predict_response_bytes(model: LoadedModel, images: int, num_scores: int, top_k: int) -> int:
    """Upper bound of the PredictResponse: per image its scores and `top_k` classes with their labels."""
    label = max((len(text.encode()) for text in model.labels), default=0)
    top = _FIELD + _VARINT + _FIELD + label + 2 * _FLOAT
    return _texts(model.name, model.version) + images * (_FIELD + _tensor(num_scores) + min(top_k, num_scores) * top)


def infer_response_bytes(model: LoadedModel, images: int, values_per_image: int) -> int:
    """Upper bound of the Open Inference Protocol's ModelInferResponse, without the request id it echoes: the model's
    one output, float32, as raw contents."""
    output = model.signature.output
    shape = _FIELD + 10 * len(output.shape)
    described = _FIELD + _texts(output.name, "FP32") + shape
    return _texts(model.name, model.version) + described + _FIELD + 4 * images * values_per_image


def _side_bytes(
    side: _SideOutputs, spatial: int, targets: int, picture: tuple[int, int], num_scores: int, rendered: bool
) -> int:
    total = _tensor(spatial) if side.segments else 0
    total += sum(_entry(name) + _tensor(spatial) for name in side.planes)
    total += sum(_entry(name) + _tensor(targets) for name in side.per_target)
    if side.class_picture and rendered:
        height, width = picture
        legend_height = _LEGEND_ROW * (num_scores + 1)
        total += _entry("clear") + _FIELD + _png_bytes(max(height, legend_height), width + _LEGEND_WIDTH)
    return total


def _tensor(values: int) -> int:
    """A float32 or int32 Tensor of `values` values, with the field that holds it."""
    return _FIELD + _TENSOR + 4 * values


def _png_bytes(height: int, width: int) -> int:
    stored = height * (width * _PNG_CHANNELS + 1)
    return stored + stored // 128 + _PNG_HEADERS


def _entry(key: str) -> int:
    """A map entry's framing and key, before its value."""
    return _FIELD + _FIELD + len(key.encode())


def _texts(*texts: str) -> int:
    return sum(_FIELD + len(text.encode()) for text in texts)


def _parameters_bytes(params: dict[str, Any]) -> int:
    return sum(_entry(name) + _FIELD + _parameter_bytes(value) for name, value in params.items())


def _parameter_bytes(value: Any) -> int:
    """A Parameter's value as api/convert.py sends it; None is filled in by the method from the image."""
    if isinstance(value, str):
        return max(_FIELD + len(value.encode()), _FILLED_PARAMETER)
    if isinstance(value, (list, tuple)):
        return max(2 * _FIELD + 8 * len(value), _FILLED_PARAMETER)
    return _FILLED_PARAMETER
