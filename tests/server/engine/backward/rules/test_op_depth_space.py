"""DepthToSpace (DCR and CRD) and SpaceToDepth against torch: pixel_shuffle is DepthToSpace in CRD mode, pixel_unshuffle
its inverse; DCR and SpaceToDepth are written with reshapes and permutes as the ONNX spec defines them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support.vjp import check_against_torch, one_op_model, symbolic_batch


def _dcr(t: torch.Tensor, block: int) -> torch.Tensor:
    n, c, h, w = t.shape
    moved = t.reshape(n, block, block, c // block**2, h, w).permute(0, 3, 4, 1, 5, 2)
    return moved.reshape(n, c // block**2, h * block, w * block)


def _space_to_depth(t: torch.Tensor, block: int) -> torch.Tensor:
    n, c, h, w = t.shape
    moved = t.reshape(n, c, h // block, block, w // block, block).permute(0, 3, 5, 1, 2, 4)
    return moved.reshape(n, c * block**2, h // block, w // block)


def _x(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(11).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize(("mode", "reference"), [("DCR", _dcr), ("CRD", F.pixel_shuffle)])
@pytest.mark.parametrize(("shape", "block"), [((2, 8, 3, 2), 2), ((1, 18, 2, 3), 3), ((2, 4, 2, 2), 1)])
@pytest.mark.parametrize("opset", [11, 13])
def test_depth_to_space(mode: str, reference, shape: tuple[int, ...], block: int, opset: int) -> None:
    x = _x(shape)
    model = one_op_model("DepthToSpace", {"x": x}, opset=opset, blocksize=block, mode=mode)
    check_against_torch(model, {"x": x}, lambda t: reference(t, block))


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space_with_symbolic_batch(mode: str) -> None:
    x = _x((2, 8, 3, 2))
    model = symbolic_batch(one_op_model("DepthToSpace", {"x": x}, blocksize=2, mode=mode))
    check_against_torch(model, {"x": x}, lambda t: (_dcr if mode == "DCR" else F.pixel_shuffle)(t, 2))


@pytest.mark.parametrize(("shape", "block"), [((2, 2, 4, 6), 2), ((1, 3, 6, 3), 3)])
def test_space_to_depth(shape: tuple[int, ...], block: int) -> None:
    x = _x(shape)
    model = symbolic_batch(one_op_model("SpaceToDepth", {"x": x}, blocksize=block))
    check_against_torch(model, {"x": x}, lambda t: _space_to_depth(t, block))


def test_the_two_modes_differ() -> None:
    """A guard on the references above: with more than one output channel DCR and CRD order channels differently, so
    a mode mix-up in the rule cannot pass."""
    t = torch.arange(32.0).reshape(1, 8, 2, 2)
    assert not torch.equal(_dcr(t, 2), F.pixel_shuffle(t, 2))
