"""Images in and out: header probing, decoding, preprocessing to the model's input, geometry, overlays."""

from onnxplain.server.imaging.decode import decode_image
from onnxplain.server.imaging.geometry import Geometry, map_to_original
from onnxplain.server.imaging.header import probe_size
from onnxplain.server.imaging.preprocess import preprocess, target_size
from onnxplain.server.imaging.render import COLORMAPS, render_overlay, tensor_to_image
from onnxplain.server.imaging.spec import PreprocessingSpec

__all__ = [
    "COLORMAPS",
    "Geometry",
    "PreprocessingSpec",
    "decode_image",
    "map_to_original",
    "preprocess",
    "probe_size",
    "render_overlay",
    "target_size",
    "tensor_to_image",
]
