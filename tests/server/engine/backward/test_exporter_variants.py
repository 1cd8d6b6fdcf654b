"""Forms real exporters and deployment tools give classifiers, each of which once broke every gradient method: the
input gradient of the served model equals torch autograd (float64) on the same weights, built as the server builds
it (load_model, then backward_session).

- a dynamic batch written as dim_value -1 (Paddle2ONNX) on the input, the output and the value infos;
- TF-style "SAME" padding whose pads the graph computes from Shape at run time (timm's pad_same, exported with dynamic
  height and width);
- a float16 model made by ONNX Runtime's own converter (the backward graph runs in float32 on its exact float16
  weights, so the reference is the torch model with its weights rounded to float16).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnxruntime.transformers.float16 import convert_float_to_float16
from support.models import export, write_model
from support.vjp import IR_VERSION, assert_relative_close
from support.zoo import CLASSES, ResNetStyle, SamePaddedNet
from torch import nn

from onnxplain.server.engine.gradients import BackwardSpec, backward_session
from onnxplain.server.repository.loader import load_model
from onnxplain.server.repository.model import LoadedModel, ModelSource
from onnxplain.server.settings import ServerSettings

SHAPE = (3, 33, 31)
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> ServerSettings:
    return ServerSettings(model_repository=tmp_path_factory.mktemp("repository"), device="cpu", threads=1)


def served(settings: ServerSettings, name: str, model: onnx.ModelProto) -> LoadedModel:
    path = write_model(Path(settings.model_repository), name, model.SerializeToString())
    return load_model(ModelSource(name, "1", path), settings)


def rows(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    seeds = np.zeros((2, CLASSES), np.float32)
    seeds[0, 3] = 1.0
    seeds[1] = rng.normal(size=CLASSES)
    return rng.normal(size=(2, *shape)).astype(np.float32), seeds


def autograd(module: nn.Module, images: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    module = module.double().eval()
    inputs = torch.tensor(images, dtype=torch.float64, requires_grad=True)
    (gradient,) = torch.autograd.grad(module(inputs), inputs, torch.tensor(seeds, dtype=torch.float64))
    return gradient.numpy()


def input_gradient(loaded: LoadedModel, shape: tuple[int, ...], images: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    return backward_session(loaded, shape, BackwardSpec()).run(images, seeds).input_gradient


@functools.cache
def resnet_file(opset: int) -> bytes:
    return export(ResNetStyle(), (1, *SHAPE), opset=opset)


@pytest.mark.parametrize("opset", [11, 17])
def test_batch_written_as_minus_one(settings, opset: int) -> None:
    model = onnx.shape_inference.infer_shapes(onnx.load_from_string(resnet_file(opset)))
    graph = model.graph
    for value in (*graph.input, *graph.output, *graph.value_info):
        batch = value.type.tensor_type.shape.dim[0]
        batch.Clear()
        batch.dim_value = -1
    assert {node.op_type for node in graph.node} >= {"MaxPool", "GlobalAveragePool"}
    loaded = served(settings, f"paddle_batch_{opset}", model)
    images, seeds = rows(SHAPE)
    ours = input_gradient(loaded, SHAPE, images, seeds)
    assert_relative_close(ours, autograd(ResNetStyle(), images, seeds), TOLERANCE)


def test_same_padding_computed_from_the_input_shape(settings) -> None:
    model = onnx.load_from_string(export(SamePaddedNet(), (1, *SHAPE), opset=13, dynamic_spatial=True))
    pads = [node for node in model.graph.node if node.op_type == "Pad"]
    assert pads and all(name not in {init.name for init in model.graph.initializer} for name in pads[0].input[1:2])
    assert "Shape" in {node.op_type for node in model.graph.node}
    loaded = served(settings, "same_padding", model)
    for shape in (SHAPE, (3, 24, 40)):  # pads differ per size: each size folds its own
        images, seeds = rows(shape)
        ours = input_gradient(loaded, shape, images, seeds)
        assert_relative_close(ours, autograd(SamePaddedNet(), images, seeds), TOLERANCE)


def test_float16_model_is_differentiated_in_float32(settings) -> None:
    model = convert_float_to_float16(onnx.load_from_string(resnet_file(17)), keep_io_types=False)
    model.ir_version = IR_VERSION
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    loaded = served(settings, "float16", model)
    images, seeds = rows(SHAPE)
    ours = input_gradient(loaded, SHAPE, images, seeds)
    # The float16 file holds the float32 model's (BatchNorm-folded) weights rounded to float16, which moves the
    # activations by about 3e-4 relative. Where that flips a ReLU or a max pool's choice, the gradient moves by whole
    # pixels: measured cosines with the float32 model's gradient 0.9979 and 0.9999 for these two rows (0.99995 for
    # other images), relative L2 errors 5e-4 to 3e-2. The floor leaves room for that and nothing more: a backward
    # with a wrong rule or float16 arithmetic falls far below it.
    reference = autograd(ResNetStyle(), images, seeds)
    for row, expected in zip(ours, reference, strict=True):
        cosine = np.sum(row * expected) / (np.linalg.norm(row) * np.linalg.norm(expected))
        assert cosine > 0.995, cosine
