"""Model management and metadata: list, describe, load, unload, reload."""

from __future__ import annotations

from dataclasses import dataclass

from onnxplain.server.methods.base import Family
from onnxplain.server.methods.gradient_base import GradientMethod
from onnxplain.server.methods.registry import METHODS
from onnxplain.server.repository.model import LoadedModel
from onnxplain.server.repository.registry import ModelRegistry, VersionStatus
from onnxplain.server.repository.support import NOT_YET_CHECKED


@dataclass(frozen=True)
class MethodSupport:
    name: str
    family: Family
    supported: bool
    reason: str


@dataclass(frozen=True)
class ModelDescription:
    status: VersionStatus
    versions: list[str]
    # None while the version is not loaded: only the status is known then.
    model: LoadedModel | None
    methods: list[MethodSupport]


def describe_model(registry: ModelRegistry, name: str, version: str = "") -> ModelDescription:
    """Metadata for the given version, or the latest ready one (else the latest on disk, with its state)."""
    versions = registry.versions(name)
    try:
        model = registry.get(name, version)
    except Exception:
        model = None
    status = registry.status(name, model.version if model else (version or _latest(registry, name, versions)))
    return ModelDescription(status=status, versions=versions, model=model, methods=method_support(model))


def method_support(model: LoadedModel | None) -> list[MethodSupport]:
    """Per method, whether it runs on the model. A method whose graphs no call has built yet is supported on the
    load-time scan's word, and its reason says it is not yet checked."""
    support = []
    for method in sorted(METHODS.values(), key=lambda m: m.name):
        if model is None:
            support.append(MethodSupport(method.name, method.family, False, "the model is not loaded"))
            continue
        reason = method.unsupported_reason(model)
        if reason is None and isinstance(method, GradientMethod) and not model.checks.checked(method.name):
            support.append(MethodSupport(method.name, method.family, True, NOT_YET_CHECKED))
            continue
        support.append(MethodSupport(method.name, method.family, reason is None, reason or ""))
    return support


def _latest(registry: ModelRegistry, name: str, versions: list[str]) -> str:
    if versions:
        return versions[-1]
    registry.status(name, "")  # raises NotFound naming the known models
    return ""
