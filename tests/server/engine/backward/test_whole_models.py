"""The input gradient of whole exported models, built as the server builds it (load_model, then backward_session:
fix_input_shape → with_min_opset → explained_tensor → differentiate), equals torch autograd in float64 on the same
torch model, to 1e-5 of max|reference|: ResNet-, MobileNetV3-, VGG- and TensorFlow-style models (tests/support/zoo.py),
from the legacy exporter at opsets 11 to 18 and from the dynamo exporter at opset 18 and its default; dynamic batch
and spatial axes; a fixed batch; a model ending in Softmax (logits by default, probabilities when asked).

Rows: two images with different one-hot seeds, and the first image again with a mixed seed vector."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from support.models import WithSoftmax, export, write_model
from support.vjp import assert_relative_close
from support.zoo import CLASSES, ConvNeXtStyle, MobileNetV3Style, ResNetStyle, TFStyle, VGGStyle, ViTStyle

from onnxplain.server.engine.gradients import BackwardSpec, backward_session
from onnxplain.server.repository.loader import load_model
from onnxplain.server.repository.model import LoadedModel, ModelSource
from onnxplain.server.settings import ServerSettings

NCHW = (3, 40, 40)
TOLERANCE = 1e-5

MODELS = {
    "resnet": (ResNetStyle, NCHW),
    "mobilenet_v3": (MobileNetV3Style, NCHW),
    "vgg": (VGGStyle, (3, 32, 32)),
    "tf_nhwc": (TFStyle, (40, 40, 3)),
    "softmax": (lambda: WithSoftmax(ResNetStyle(seed=1)), NCHW),
    "vit": (ViTStyle, (3, 32, 32)),
    "convnext": (ConvNeXtStyle, (3, 32, 32)),
}
# Other image sizes for exports with dynamic spatial axes (the backward graph is built per size).
OTHER_SIZES = {"resnet": (3, 48, 36), "mobilenet_v3": (3, 33, 45), "tf_nhwc": (48, 36, 3)}
DYNAMO_DEFAULT_OPSET = 20  # what torch 2.13's dynamo exporter writes when no opset is asked for


@dataclass(frozen=True)
class Case:
    model: str
    opset: int
    dynamo: bool = False
    dynamic_spatial: bool = False
    dynamic_batch: bool = True
    probability: bool = False

    @property
    def id(self) -> str:
        exporter = "dynamo" if self.dynamo else "legacy"
        extras = [
            "dynamic_hw" if self.dynamic_spatial else "",
            "" if self.dynamic_batch else "fixed_batch",
            "probability" if self.probability else "",
        ]
        return "-".join([self.model, exporter, f"opset{self.opset}", *filter(None, extras)])


def _cases() -> list[Case]:
    cases = []
    for model in ("resnet", "mobilenet_v3", "vgg", "tf_nhwc"):
        cases += [Case(model, opset) for opset in (11, 13, 15, 17, 18)]
        cases += [Case(model, opset, dynamo=True) for opset in (18, DYNAMO_DEFAULT_OPSET)]
    for model in OTHER_SIZES:
        cases.append(Case(model, 17, dynamic_spatial=True))
        cases.append(Case(model, 18, dynamo=True, dynamic_spatial=True))
    cases.append(Case("resnet", 17, dynamic_batch=False))
    for model in ("vit", "convnext"):
        cases.append(Case(model, 17))
    # torch 2.13's dynamo exporter fixes the ViT's batch inside the attention (the export runs at batch 1 only).
    cases += [Case("convnext", 18, dynamo=True), Case("vit", 18, dynamo=True, dynamic_batch=False)]
    for probability in (False, True):
        cases += [Case("softmax", opset, probability=probability) for opset in (11, 17)]
        cases.append(Case("softmax", 18, dynamo=True, probability=probability))
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> ServerSettings:
    return ServerSettings(model_repository=tmp_path_factory.mktemp("repository"), device="cpu", threads=1)


def rows(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Images (3, *shape): two images and the first again; seeds (3, K): one-hot 2, one-hot 7, a mixed vector."""
    rng = np.random.default_rng(sum(shape))
    images = rng.normal(size=(2, *shape)).astype(np.float32)
    seeds = np.zeros((3, CLASSES), np.float32)
    seeds[0, 2] = seeds[1, 7] = 1.0
    seeds[2] = rng.normal(size=CLASSES)
    return np.concatenate([images, images[:1]]), seeds


def torch_reference(module: torch.nn.Module, images: np.ndarray, seeds: np.ndarray, probability: bool) -> np.ndarray:
    """seedᵀ·∂score/∂image by autograd in float64; the score is the logits unless `probability` (then the Softmax
    output: the wrapper's own, or one over the logits)."""
    module = module.double().eval()
    if isinstance(module, WithSoftmax) and not probability:
        module = module.inner
    inputs = torch.tensor(images, dtype=torch.float64, requires_grad=True)
    (gradient,) = torch.autograd.grad(module(inputs), inputs, torch.tensor(seeds, dtype=torch.float64))
    return gradient.numpy()


def served_model(settings: ServerSettings, case: Case, model_file: bytes) -> LoadedModel:
    """The model as the server loads it, after checking the exporter wrote the asked opset."""
    opset = next(entry.version for entry in onnx.load_from_string(model_file).opset_import if entry.domain == "")
    assert opset == case.opset
    path = write_model(Path(settings.model_repository), case.id, model_file)
    loaded = load_model(ModelSource(case.id, "1", path), settings)
    assert loaded.checks.walk_problems["gradient"] is None, loaded.checks.walk_problems
    return loaded


@functools.cache
def exported(model: str, opset: int, dynamo: bool, dynamic_batch: bool, dynamic_spatial: bool) -> bytes:
    """The model file (cached: the Softmax cases with and without `probability` share theirs)."""
    build, shape = MODELS[model]
    return export(
        build(),
        (1, *shape),
        opset=opset,
        dynamo=dynamo,
        dynamic_batch=dynamic_batch,
        dynamic_spatial=dynamic_spatial,
    )


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_input_gradient_equals_torch_autograd(settings, case: Case) -> None:
    build, shape = MODELS[case.model]
    model_file = exported(case.model, case.opset, case.dynamo, case.dynamic_batch, case.dynamic_spatial)
    loaded = served_model(settings, case, model_file)
    for size in [shape, OTHER_SIZES[case.model]] if case.dynamic_spatial else [shape]:
        images, seeds = rows(size)
        session = backward_session(loaded, size, BackwardSpec(probability=case.probability))
        ours = session.run(images, seeds).input_gradient
        assert_relative_close(ours, torch_reference(build(), images, seeds, case.probability), TOLERANCE)


# What each export must contain for the cases above to test what they claim: (model, opset, dynamo) -> ops.
STRUCTURES = {
    ("resnet", 17, False): {"Conv k7 s2 pads[3, 3, 3, 3]", "MaxPool k3 s2 pads[1, 1, 1, 1]", "Conv k1 s2", "Add"},
    ("mobilenet_v3", 17, False): {"HardSwish", "HardSigmoid", "Mul", "Clip", "depthwise Conv k5 s2 pads[2, 2, 2, 2]"},
    # F.pad's pads as an unfolded constant subgraph: shapes after the Pad are known only once prepare.fold_constants
    # has evaluated it.
    ("tf_nhwc", 17, False): {"Transpose", "ConstantOfShape", "Pad", "ReduceMean", "AveragePool"},
    ("tf_nhwc", 18, True): {"Transpose", "depthwise Conv k3 s2 pads[0, 0, 1, 1]", "ReduceMean", "AveragePool"},
    ("softmax", 11, False): {"Softmax"},
}


def described(node: onnx.NodeProto) -> str:
    """'MaxPool k3 s2 pads[1, 1, 1, 1]', 'depthwise Conv k5 s2 ...' for windowed ops; the op type for the others."""
    if node.op_type not in ("Conv", "MaxPool"):
        return node.op_type
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    pads = attrs.get("pads", [0, 0, 0, 0])
    text = f"{node.op_type} k{attrs['kernel_shape'][0]} s{attrs.get('strides', [1])[0]}"
    text += f" pads{list(pads)}" if any(pads) else ""
    return f"depthwise {text}" if attrs.get("group", 1) > 1 else text


@pytest.mark.parametrize(("model", "opset", "dynamo"), list(STRUCTURES))
def test_exports_have_the_structures_under_test(model: str, opset: int, dynamo: bool) -> None:
    graph = onnx.load_from_string(exported(model, opset, dynamo, True, False)).graph
    assert STRUCTURES[model, opset, dynamo] <= {described(node) for node in graph.node}
