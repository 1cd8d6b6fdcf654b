"""Every method on every form of classifier that real exporters and deployment tools produce, through a live server:
each call returns finite maps, or the metadata said the method is unsupported and the call is FAILED_PRECONDITION
with that reason. A call that metadata called supported may not fail, and a valid request is never
INVALID_ARGUMENT. The models are convolutional, so every method is expected to run on every form.

The forms (tests/support/variants.py, tests/support/zoo.py): the legacy export; a batch written as dim_value -1;
float16; int8 static QDQ, static QOperator and dynamic quantization; stripped output shapes; a regression output
before the class scores; uint8 NHWC pixels with the normalisation in the graph; TF-style SAME pads computed from
Shape; LRN layers; an NHWC model with a leading Transpose.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
from support import variants
from support.models import export, write_model
from support.servers import serving_client
from support.zoo import CLASSES, LrnStyle, ResNetStyle, SamePaddedNet, TFStyle, cheap_parameters

from onnxplain.client import Client, OnnxplainError
from onnxplain.server.methods.registry import METHODS

SIZE = 24
SHAPE = (3, SIZE, SIZE)
CHEAP = cheap_parameters(SIZE)
VARIANTS = (
    "float",
    "batch_minus_one",
    "float16",
    "qdq",
    "qoperator",
    "dynamic",
    "stripped_output",
    "regression_first",
    "uint8_pixels",
    "same_padding",
    "lrn",
    "nhwc",
)


def _repository(directory: Path) -> None:
    float_file = directory / "float.onnx"
    float_file.write_bytes(export(ResNetStyle(), (1, *SHAPE)))
    base = onnx.load(float_file)
    calibration = np.random.default_rng(1).standard_normal((8, *SHAPE)).astype(np.float32)
    models = {
        "float": base,
        "batch_minus_one": variants.batch_minus_one(base),
        "float16": variants.float16(base),
        **variants.quantized(float_file, calibration),
        "stripped_output": variants.stripped_outputs(base),
        "regression_first": variants.regression_output_first(base, CLASSES),
        "uint8_pixels": variants.uint8_pixels(base),
        "same_padding": onnx.load_from_string(export(SamePaddedNet(), (1, *SHAPE), opset=13, dynamic_spatial=True)),
        "lrn": onnx.load_from_string(export(LrnStyle(), (1, *SHAPE), opset=11)),
        "nhwc": onnx.load_from_string(export(TFStyle(), (1, SIZE, SIZE, 3))),
    }
    for name, model in models.items():
        write_model(directory / "repository", name, model.SerializeToString())


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[Client]:
    directory = tmp_path_factory.mktemp("zoo")
    _repository(directory)
    with serving_client(directory / "repository") as connected:
        yield connected


@pytest.fixture(scope="module")
def metadata(client) -> dict[str, dict[str, object]]:
    """Each model's method support as metadata gave it before any call."""
    return {name: {m.name: m for m in client.metadata(name).methods} for name in VARIANTS}


def _image(variant: str) -> np.ndarray:
    rng = np.random.default_rng(len(variant))
    if variant == "uint8_pixels":
        return rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    if variant == "nhwc":
        return rng.uniform(size=(SIZE, SIZE, 3)).astype(np.float32)
    return rng.standard_normal(SHAPE).astype(np.float32)


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_method_runs_or_is_refused_as_metadata_said(client, metadata, variant: str, method: str) -> None:
    support = metadata[variant][method]
    try:
        explanation = client.explain(variant, _image(variant), method=method, target=1, **CHEAP.get(method, {}))
    except OnnxplainError as error:
        assert error.code is not grpc.StatusCode.INVALID_ARGUMENT, error.message
        assert not support.supported, f"metadata said supported ({support.reason!r}); the call failed: {error}"
        assert error.code is grpc.StatusCode.FAILED_PRECONDITION, error.message
        assert support.reason in error.message
    else:
        assert support.supported, support.reason
        assert np.all(np.isfinite(explanation.attribution))
    assert support.supported, f"{method} is refused on {variant}: {support.reason}"
