"""A loaded model version: its config, its graph signature, its ONNX Runtime session, and the sessions of graphs
derived from it."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnxplain.server.engine.admission import ExplanationSlots
from onnxplain.server.engine.derived import DerivedGraphs, DerivedSession, GraphBuilder
from onnxplain.server.engine.session import ModelSession
from onnxplain.server.imaging.spec import PreprocessingSpec
from onnxplain.server.repository.config import ModelConfig, OutputKind
from onnxplain.server.repository.signature import ModelSignature
from onnxplain.server.repository.support import MethodChecks


class ModelLoadError(Exception):
    """The model cannot serve; the message is shown as the model's unavailability reason."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model version lives: DIR/<name>/<version>/model.onnx."""

    name: str
    version: str
    path: Path

    @property
    def model_dir(self) -> Path:
        return self.path.parent.parent


@dataclass(frozen=True)
class LoadedModel:
    source: ModelSource
    config: ModelConfig
    signature: ModelSignature
    session: ModelSession
    num_classes: int | None
    derived: DerivedGraphs
    # Turns for explanations of more than one pass (single-pass ones share batches through the scheduler instead).
    explanations: ExplanationSlots
    # Which methods run on this model: the load-time scan, then what their first calls found.
    checks: MethodChecks = field(default_factory=MethodChecks)

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def version(self) -> str:
        return self.source.version

    @property
    def threads(self) -> int:
        """ONNX Runtime intra-op threads of the model's sessions."""
        return self.derived.threads

    @property
    def labels(self) -> tuple[str, ...]:
        return self.config.labels

    @property
    def preprocessing(self) -> PreprocessingSpec | None:
        return self.config.preprocessing

    @property
    def output_kind(self) -> OutputKind:
        if self.config.output_kind:
            return self.config.output_kind
        return "probabilities" if self.signature.final_activation else "logits"

    def derived_session(self, key: Hashable, build: GraphBuilder) -> DerivedSession:
        """The session of a graph derived from this model (see engine/derived.py), built once per key."""
        return self.derived.session(key, build)

    def label_of(self, class_index: int) -> str:
        return self.labels[class_index] if class_index < len(self.labels) else ""

    def to_probabilities(self, scores: np.ndarray) -> np.ndarray:
        """Probabilities from (n, K) scores: softmax of logits, the scores themselves for probability outputs."""
        if self.output_kind == "probabilities":
            return scores
        shifted = scores - scores.max(axis=-1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=-1, keepdims=True)
