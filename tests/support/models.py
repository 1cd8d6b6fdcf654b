"""Small models built in the tests (torch export or onnx.helper) and repositories to serve them from."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import yaml
from onnx import TensorProto, helper, numpy_helper

from onnxplain.server.repository.signature import infer_layout

# ONNX Runtime 1.31 reads IR versions up to 13; onnx 1.23 writes 14 by default.
IR_VERSION = 8


class SmallCNN(torch.nn.Module):
    """Conv-ReLU-MaxPool-Conv-ReLU-GAP-Linear: the shape of a real classifier, small enough for CI."""

    def __init__(self, channels: int = 3, classes: int = 5, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(channels, 8, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(8, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
        )
        self.head = torch.nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ChannelsLast(torch.nn.Module):
    """Takes NHWC input, as TensorFlow-exported models do, and permutes it for the wrapped NCHW model."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.permute(0, 3, 1, 2))


class WithSoftmax(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.inner(x), dim=1)


def export(
    module: torch.nn.Module,
    example_shape: tuple[int, ...],
    *,
    dynamic_batch: bool = True,
    dynamic_spatial: bool = False,
    opset: int = 17,
    dynamo: bool = False,
    keep_batch_norm: bool = False,
) -> bytes:
    """ONNX bytes from the legacy exporter, or from the torch.export-based one with `dynamo`, with the IR version ONNX
    Runtime reads. Dynamic spatial axes are the image's height and width in its layout (NCHW or NHWC). Both exporters
    fold BatchNorm into the convolution before it; the legacy one keeps it as a node with `keep_batch_norm`."""
    if dynamo and keep_batch_norm:
        raise ValueError("the dynamo exporter always folds BatchNorm")
    module.eval()
    axes: dict[int, str] = {}
    if dynamic_batch:
        axes[0] = "batch"
    if dynamic_spatial:
        spatial = (1, 2) if infer_layout(example_shape) == "NHWC" else (2, 3)
        axes.update(zip(spatial, ("height", "width"), strict=True))
    buffer = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # the dynamo exporter reports progress
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            (torch.zeros(example_shape),),
            None if dynamo else buffer,
            input_names=["input"],
            output_names=["scores"],
            dynamic_axes={"input": axes, "scores": {0: "batch"}} if axes else None,
            opset_version=opset,
            dynamo=dynamo,
            **({"training": torch.onnx.TrainingMode.PRESERVE} if keep_batch_norm else {}),
        )
    model = program.model_proto if dynamo else onnx.load_from_string(buffer.getvalue())
    model.ir_version = IR_VERSION
    return model.SerializeToString()


def identity_classifier(classes: int = 4, size: int = 8) -> bytes:
    """onnx.helper model: scores = mean of each of the first `classes` rows of a 1-channel image."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input"], ["rows"], axes=[3], keepdims=0),
            helper.make_node("Flatten", ["rows"], ["scores"], axis=1),
        ],
        "rows",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, classes, size])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", classes])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=IR_VERSION)
    return model.SerializeToString()


def mod_stem_cnn(size: int) -> onnx.ModelProto:
    """A rule-less op (float Mod) in the stem, then Conv -> Relu -> GlobalAveragePool -> Gemm: the CAM family only
    differentiates from the scores to the feature map, so it runs; input-gradient methods cannot."""
    rng = np.random.default_rng(3)
    graph = helper.make_graph(
        [
            helper.make_node("Mod", ["input", "divisor"], ["wrapped"], name="stem_wrap", fmod=1),
            helper.make_node("Conv", ["wrapped", "kernel"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv"], ["features"]),
            helper.make_node("GlobalAveragePool", ["features"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Gemm", ["flat", "dense"], ["scores"], transB=1),
        ],
        "wrapped_stem",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 4])],
        [
            numpy_helper.from_array(np.asarray(0.7, dtype=np.float32), "divisor"),
            numpy_helper.from_array(rng.normal(size=(6, 3, 3, 3)).astype(np.float32), "kernel"),
            numpy_helper.from_array(rng.normal(size=(4, 6)).astype(np.float32), "dense"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=IR_VERSION)


def write_model(repository: Path, name: str, model: bytes, config: dict | None = None, version: str = "1") -> Path:
    """DIR/<name>/<version>/model.onnx (+ config.yaml); returns the model file."""
    folder = repository / name / version
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(model)
    if config is not None:
        (repository / name / "config.yaml").write_text(yaml.safe_dump(config))
    return folder / "model.onnx"
