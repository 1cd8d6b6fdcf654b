"""The models every row runs on: the embedded demo model and the hand-written architectures at a chosen input size
and head, each as an ONNX file (what the server serves) and a torch module (what the peers run).

The demo model exists only as ONNX; its torch module is converted from the graph (twin.py), as a user would convert
a deployed model to run Captum on it. Exports of the architectures are cached under a key that includes
architectures.py's text and torch's version.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import architectures
import onnx
import torch
from torch import nn
from twin import torch_twin

import onnxplain.server.demo as demo

# ONNX Runtime 1.31 reads IR versions up to 13; recent onnx releases stamp newer ones.
IR_VERSION = 8
OPSET = 17
DEMO = "digits"
DEMO_FOLDER = Path(demo.__file__).parent / "repository" / DEMO
# The head an architecture has unless a row says otherwise; names and labels mention only other heads.
USUAL_CLASSES = {DEMO: 10, "tiny_cnn": 10}


@dataclass(frozen=True)
class BenchModel:
    """An architecture at a square input size (NCHW) with a head of `classes` classes."""

    architecture: str
    size: int
    classes: int = 1000

    @property
    def channels(self) -> int:
        return 1 if self.architecture == DEMO else 3

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)

    @property
    def name(self) -> str:
        """The model's name in the repository and in the table."""
        if self.architecture == DEMO:
            return DEMO
        head = "" if self.classes == USUAL_CLASSES.get(self.architecture, 1000) else f"_{self.classes}c"
        return f"{self.architecture}_{self.size}{head}"

    @property
    def label(self) -> str:
        """The model in the table: architecture, input size, and the head when it is not the usual one."""
        if self.architecture == DEMO:
            return f"{DEMO} 1x{self.size}x{self.size} (demo)"
        head = "" if self.classes == USUAL_CLASSES.get(self.architecture, 1000) else f", {self.classes} classes"
        return f"{self.architecture} {self.size}x{self.size}{head}"


DIGITS = BenchModel(DEMO, 28, 10)


def torch_module(model: BenchModel) -> nn.Module:
    """The model in torch, eval mode, parameters frozen (the peers differentiate with respect to the input only),
    activations not in place (Captum's guided backprop hooks them)."""
    if model.architecture == DEMO:
        module = torch_twin(onnx.load(str(DEMO_FOLDER / "1" / "model.onnx")))
    else:
        module = architectures.build(model.architecture, model.classes, model.input_shape)
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    for layer in module.modules():
        if hasattr(layer, "inplace"):
            layer.inplace = False
    return module


def onnx_file(model: BenchModel, module: nn.Module, cache: Path) -> Path:
    """The model as ONNX: the demo's own file, or the architecture exported (opset 17, dynamic batch, IR version 8)
    and reused from the cache while current."""
    if model.architecture == DEMO:
        return DEMO_FOLDER / "1" / "model.onnx"
    source = Path(architectures.__file__).read_bytes()
    key = hashlib.sha256(source + f"{model}{torch.__version__}".encode()).hexdigest()[:12]
    path = cache / f"{model.name}-{key}.onnx"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_bytes(export(module, model.input_shape))
        partial.replace(path)
        for stale in cache.glob(f"{model.name}-*.onnx"):
            if stale != path:
                stale.unlink()  # exports of older definitions
    return path


def export(module: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.zeros((1, *input_shape), device=next(module.parameters()).device),),
            buffer,
            input_names=["input"],
            output_names=["scores"],
            dynamic_axes={"input": {0: "batch"}, "scores": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    graph = onnx.load_from_string(buffer.getvalue())
    graph.ir_version = IR_VERSION
    return graph.SerializeToString()
