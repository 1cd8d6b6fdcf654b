"""What Evaluate takes beside images and targets: the explainers to compare and the regions objects lie in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np

from onnxplain.client.errors import InvalidArgumentError
from onnxplain.client.parameters import ParameterValue, to_parameters
from onnxplain.client.tensors import encode_tensor
from onnxplain.v1 import explain_service_pb2 as pb


@dataclass(frozen=True)
class MethodSpec:
    """One explainer: a method the server runs with `params`, or `attributions` you already have (one (T, H, W)
    or (H, W) array per image, at model-input resolution), or both (the method then only re-runs for the metrics
    that need it: max_sensitivity, parameter_randomization). `name` labels it in the results (default: method)."""

    method: str = ""
    params: Mapping[str, ParameterValue] = field(default_factory=dict)
    name: str = ""
    attributions: Sequence[np.ndarray] | np.ndarray | None = None

    def to_message(self) -> pb.Explainer:
        if not self.method and self.attributions is None:
            raise InvalidArgumentError("a MethodSpec needs a method or attributions")
        maps = self.attributions
        if isinstance(maps, np.ndarray):
            maps = [maps]  # one image's maps
        return pb.Explainer(
            name=self.name,
            method=self.method,
            parameters=to_parameters(self.params),
            attributions=[encode_tensor(np.asarray(m, dtype=np.float32)) for m in maps or ()],
        )


@dataclass(frozen=True)
class Region:
    """Where the object lies: a box or a mask, in the pixels of the image as sent (the original image for files
    and bytes, the model input for tensors)."""

    box: tuple[int, int, int, int] | None = None
    """(top, left, height, width)."""
    mask: np.ndarray | None = None
    """(H, W), nonzero inside."""

    @classmethod
    def from_box(cls, top: int, left: int, height: int, width: int) -> Region:
        return cls(box=(top, left, height, width))

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> Region:
        return cls(mask=np.asarray(mask))

    def to_message(self) -> pb.Region:
        if self.mask is not None:
            return pb.Region(mask=encode_tensor(self.mask.astype(np.uint8) if self.mask.dtype == bool else self.mask))
        if self.box is None:
            raise InvalidArgumentError("a Region needs a box or a mask")
        top, left, height, width = self.box
        return pb.Region(box=pb.Box(top=top, left=left, height=height, width=width))


ExplainersLike: TypeAlias = str | MethodSpec | Sequence[str | MethodSpec]
"""A method name, a MethodSpec, or a list of them."""

RegionsLike: TypeAlias = Region | Sequence[Region] | None
"""One region for a single image, a list with one per image, or None."""


def to_explainers(explainers: ExplainersLike) -> list[pb.Explainer]:
    items = [explainers] if isinstance(explainers, (str, MethodSpec)) else list(explainers)
    if not items:
        raise InvalidArgumentError("no explainers given")
    return [(MethodSpec(method=item) if isinstance(item, str) else item).to_message() for item in items]


def to_regions(regions: RegionsLike) -> list[pb.Region]:
    if regions is None:
        return []
    items = [regions] if isinstance(regions, Region) else list(regions)
    return [region.to_message() for region in items]
