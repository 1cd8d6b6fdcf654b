"""What the server offers: model versions, their metadata, and attribution methods."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

ModelState: TypeAlias = Literal["unspecified", "unloaded", "loading", "ready", "unavailable"]
MethodFamily: TypeAlias = Literal["unspecified", "perturbation", "gradient", "cam", "relevance", "visualization"]
Layout: TypeAlias = Literal["unspecified", "nchw", "nhwc"]
OutputKind: TypeAlias = Literal["unspecified", "logits", "probabilities"]


@dataclass(frozen=True)
class ModelStatus:
    name: str
    version: str
    state: ModelState
    reason: str
    """Why the model is unavailable; empty otherwise."""


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output; dynamic dimensions are -1, named in dim_names."""

    name: str
    dtype: str
    shape: list[int]
    dim_names: list[str]


@dataclass(frozen=True)
class MethodSupport:
    """Whether a method runs on a model, and if not, what blocks it."""

    name: str
    family: MethodFamily
    supported: bool
    reason: str


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    version: str
    versions: list[str]
    """Every version in the repository, ascending."""
    state: ModelState
    reason: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    layout: Layout
    labels: list[str]
    output_kind: OutputKind
    methods: list[MethodSupport]
    providers: list[str]
    """ONNX Runtime execution providers the session really uses, in priority order."""
    num_classes: int
    max_batch_size: int
    """0 means no fixed limit."""
    preprocessing: dict[str, Any] | None = None
    """How encoded images become input tensors; None means send tensors (unless the server infers the size)."""
    heads: list[str] = field(default_factory=list)
    """The outputs predict and explain can name as `output`, the default head first (labels, output_kind,
    num_classes and methods describe it)."""

    @property
    def supported_methods(self) -> list[str]:
        return [method.name for method in self.methods if method.supported]


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    type: str
    """"int", "float", "bool", "string", "ints" or "floats"."""
    default: str
    description: str


@dataclass(frozen=True)
class MethodInfo:
    name: str
    family: MethodFamily
    description: str
    parameters: list[ParameterSpec] = field(default_factory=list)


@dataclass(frozen=True)
class MetricInfo:
    name: str
    description: str
    parameters: list[ParameterSpec] = field(default_factory=list)
    higher_is_better: bool = True
    requires: list[str] = field(default_factory=list)
    """"region": needs regions; "method": re-runs the explainer's method."""
