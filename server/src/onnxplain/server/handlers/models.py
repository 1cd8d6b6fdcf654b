"""Model management and metadata: list, describe, load, unload, reload."""

from __future__ import annotations

from dataclasses import dataclass

from onnxplain.server.methods.base import Family
from onnxplain.server.methods.registry import METHODS
from onnxplain.server.repository.model import LoadedModel
from onnxplain.server.repository.registry import ModelRegistry, VersionStatus


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
    support = []
    for method in sorted(METHODS.values(), key=lambda m: m.name):
        reason = "the model is not loaded" if model is None else method.unsupported_reason(model)
        support.append(MethodSupport(method.name, method.family, reason is None, reason or ""))
    return support


def _latest(registry: ModelRegistry, name: str, versions: list[str]) -> str:
    if versions:
        return versions[-1]
    registry.status(name, "")  # raises NotFound naming the known models
    return ""
