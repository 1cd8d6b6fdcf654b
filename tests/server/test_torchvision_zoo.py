"""torchvision's architectures with random weights, as torch's legacy exporter (opsets 11, 13 and 17) and its dynamo
exporter write them, through a live server: every method returns finite maps, or metadata said it is unsupported and
the call is FAILED_PRECONDITION with that reason (the contract of test_conformance_zoo.py). Only the refusals
expected_refusal lists are allowed; every other method must run. The input gradient the server serves equals torch
autograd in float64 on the same weights.

The exporters are spread over the architectures rather than crossed with them: each architecture has a legacy export,
each exporter form serves several architectures. Images are as small as each architecture allows with a last feature
map of more than one pixel (Inception-v3's at its minimum of 75, where it is 1x1), and method parameters are the
cheap ones (tests/support/zoo.py): the point is that each method builds and runs on each architecture's graph, not
the maps' quality.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from support.models import export, write_model
from support.servers import serving_client
from support.zoo import TORCHVISION, cheap_parameters

from onnxplain.client import Client, MethodSupport, OnnxplainError
from onnxplain.server.methods.registry import METHODS

DYNAMO_OPSET = 18


@dataclass(frozen=True)
class Entry:
    architecture: str
    opset: int
    dynamo: bool = False
    # torch 2.13's dynamo exporter bakes the batch of the example into a ViT's attention reshapes.
    dynamic_batch: bool = True

    @property
    def name(self) -> str:
        return f"{self.architecture}_{'dynamo' if self.dynamo else 'legacy'}{self.opset}"


ENTRIES = (
    Entry("resnet18", 11),
    Entry("resnet18", DYNAMO_OPSET, dynamo=True),
    Entry("mobilenet_v2", 13),
    Entry("mobilenet_v3_small", 17),
    Entry("efficientnet_b0", 11),
    Entry("regnet_x_400mf", 13),
    Entry("densenet121", 17),
    Entry("squeezenet1_1", 11),
    Entry("squeezenet1_1", DYNAMO_OPSET, dynamo=True),
    Entry("shufflenet_v2_x0_5", 13),
    Entry("shufflenet_v2_x0_5", DYNAMO_OPSET, dynamo=True),
    Entry("googlenet", 17),
    Entry("inception_v3", 13),
    Entry("mnasnet0_5", 11),
    Entry("convnext_tiny", 13),
    Entry("convnext_tiny", DYNAMO_OPSET, dynamo=True),
    # Legacy exports of the transformers need opset 14 (ViT's attention), 12 (MaxViT's Einsum).
    Entry("vit", 17),
    Entry("vit", DYNAMO_OPSET, dynamo=True, dynamic_batch=False),
    Entry("swin", 13),
    Entry("maxvit", 17),
)
_CAM_FAMILY = ("cam", "grad_cam", "grad_cam_pp", "guided_grad_cam", "score_cam")
_ATTENTION = ("vit", "swin", "maxvit")


def expected_refusal(entry: Entry, method: str) -> str | None:
    """What metadata's reason says where refusing `method` on the entry's model is right today; None where the method
    must run. LRP has no relevance rule for attention, nor for the LayerNormalization op (a LayerNorm written out
    below opset 17 is ops LRP has rules for: its Div treats the deviation as a gate). A vision transformer's tokens
    are no 4-D feature map for the CAM family. Inception-v3 at its smallest input (75 pixels) ends in a 1x1 map, so
    the default map is an earlier one that the last blocks' convolutions read, where plain CAM is not defined."""
    layer_norm_op = entry.architecture == "convnext_tiny" and (entry.dynamo or entry.opset >= 17)
    if method == "lrp" and (entry.architecture in _ATTENTION or layer_norm_op):
        return "LRP has no relevance rule for attention or LayerNorm"
    if entry.architecture == "vit" and method in _CAM_FAMILY:
        return "no 4-D feature map feeds the classifier head"
    if entry.architecture == "inception_v3" and method == "cam":
        return "cam needs a global-average-pool + dense head"
    return None


# The served input gradient against torch's in float64: either bound passes (deep float32 graphs round differently).
MAX_RELATIVE, RELATIVE_L2 = 1e-3, 5e-3
GRADIENT_TARGETS = (1, 3)


@functools.cache
def torch_model(architecture: str) -> torch.nn.Module:
    return TORCHVISION[architecture].module()


@pytest.fixture(scope="session")
def repositories(tmp_path_factory) -> dict[str, Path]:
    """Every entry exported once, each into a model repository of its own."""
    root = tmp_path_factory.mktemp("torchvision_zoo")
    for entry in ENTRIES:
        architecture = TORCHVISION[entry.architecture]
        exported = export(
            torch_model(entry.architecture),
            (1, *architecture.shape),
            opset=entry.opset,
            dynamo=entry.dynamo,
            dynamic_batch=entry.dynamic_batch,
        )
        write_model(root / entry.name, entry.name, exported)
    return {entry.name: root / entry.name for entry in ENTRIES}


@pytest.fixture(scope="module", params=ENTRIES, ids=lambda entry: entry.name)
def served(request, repositories) -> Iterator[tuple[Entry, Client]]:
    """A server holding the entry's model alone, for the entry's tests: one server for every entry would hold all
    their sessions and built graphs at once."""
    entry = request.param
    with serving_client(repositories[entry.name]) as client:
        yield entry, client


def _image(architecture: str) -> np.ndarray:
    """One image per architecture: its exports are explained on the same one."""
    seed = sorted(TORCHVISION).index(architecture)
    return np.random.default_rng(seed).standard_normal(TORCHVISION[architecture].shape, np.float32)


@functools.cache
def reference_gradients(architecture: str) -> np.ndarray:
    """(len(GRADIENT_TARGETS), *image shape): torch autograd in float64, once per architecture, on one thread:
    float64 convolutions have no oneDNN kernel, and grouped ones run as one small parallel loop per group, whose
    threads waited on each other for seconds on a busy 2-core machine."""
    module = copy.deepcopy(torch_model(architecture)).double()
    inputs = torch.tensor(_image(architecture)[None], dtype=torch.float64, requires_grad=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scores = module(inputs)[0]
        rows = [torch.autograd.grad(scores[t], inputs, retain_graph=True)[0][0] for t in GRADIENT_TARGETS]
    finally:
        torch.set_num_threads(threads)
    return torch.stack(rows).numpy()


def _outcome(client: Client, entry: Entry, method: str, support: MethodSupport) -> str | None:
    """What is wrong with one call of `method` on the entry's model, against what metadata said; None when nothing."""
    shape = TORCHVISION[entry.architecture].shape
    parameters = cheap_parameters(shape[-1]).get(method, {})
    try:
        explanation = client.explain(entry.name, _image(entry.architecture), method=method, target=1, **parameters)
    except OnnxplainError as error:
        if error.code is grpc.StatusCode.INVALID_ARGUMENT:
            return f"INVALID_ARGUMENT for a valid request: {error.message}"
        if support.supported:
            return f"metadata said supported ({support.reason!r}); the call failed: {error}"
        if error.code is not grpc.StatusCode.FAILED_PRECONDITION or support.reason not in error.message:
            return f"refused with {error.code.name} ({error.message}), not the metadata's reason {support.reason!r}"
        expected = expected_refusal(entry, method)
        if expected is None or expected not in support.reason:
            return f"refused: {support.reason}"
        return None
    if not support.supported:
        return f"metadata said unsupported ({support.reason}); the call ran"
    if not np.all(np.isfinite(explanation.attribution)):
        return "the map is not finite"
    if expected_refusal(entry, method) is not None:
        return "ran, where it is expected to be refused (update expected_refusal)"
    return None


def test_every_method_runs_or_is_refused_as_metadata_said(served: tuple[Entry, Client]) -> None:
    entry, client = served
    support = {method.name: method for method in client.metadata(entry.name).methods}  # before any call
    problems = {method: _outcome(client, entry, method, support[method]) for method in sorted(METHODS)}
    failed = [f"{method}: {problem}" for method, problem in problems.items() if problem]
    assert not failed, "\n".join(failed)


def test_served_input_gradient_equals_torch_autograd(served: tuple[Entry, Client]) -> None:
    """The gradient method's input-shaped map for two classes, against torch autograd in float64 on the same weights
    (after the method test, so the server's backward graph is built already)."""
    entry, client = served
    image = _image(entry.architecture)
    explanation = client.explain(
        entry.name, image, method="gradient", target=list(GRADIENT_TARGETS), attribution_shape="input"
    )
    expected = reference_gradients(entry.architecture)
    difference = explanation.attribution - expected
    max_relative = np.abs(difference).max() / np.abs(expected).max()
    relative_l2 = np.linalg.norm(difference) / np.linalg.norm(expected)
    assert max_relative <= MAX_RELATIVE or relative_l2 <= RELATIVE_L2, (max_relative, relative_l2)
