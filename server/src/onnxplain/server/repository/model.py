"""A loaded model version: its config, its graph signature, its ONNX Runtime session, the sessions of graphs
derived from it, and its views that explain another of its outputs (heads)."""

from __future__ import annotations

import threading
from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from onnxplain.server.engine.admission import ExplanationSlots
from onnxplain.server.engine.backward.support import support_problems
from onnxplain.server.engine.cancel import CancelToken
from onnxplain.server.engine.derived import DerivedGraphs, DerivedSession, GraphBuilder
from onnxplain.server.engine.session import ModelSession
from onnxplain.server.errors import FailedPrecondition, InvalidInput
from onnxplain.server.imaging.layout import image_shape
from onnxplain.server.imaging.preprocess import target_size
from onnxplain.server.imaging.spec import PreprocessingSpec
from onnxplain.server.observability.names import shortened
from onnxplain.server.repository.config import ModelConfig, OutputKind
from onnxplain.server.repository.signature import ModelSignature, SignatureError
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
    # The views of this model that explain its other outputs (`head`), by output name, built on first use; a copy
    # made with dataclasses.replace (a head view, a randomised copy) starts with none.
    _heads: dict[str, LoadedModel] = field(default_factory=dict, init=False, repr=False, compare=False)
    _heads_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

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

    def head(self, output: str) -> LoadedModel:
        """The model explaining output `output` instead of its default one ("" or the default's name: the model
        itself), for multi-head models (five digit heads of a captcha reader, a face model's boxes and classes).

        The view shares the session, the derived-graph cache (callers key derived graphs on the output's name), the
        explanation turns and the config, and has its own signature, class count and method checks. Labels and a
        configured output kind belong to the default head; another head is scored by its graph (probabilities when
        Softmax or Sigmoid computes it, else logits). InvalidInput names the model's outputs for an unknown name and
        says why an output is not class scores."""
        if not output or output == self.signature.output.name:
            return self
        with self._heads_lock:
            view = self._heads.get(output)
            if view is None:
                view = self._heads[output] = self._head_view(output)
            return view

    def _head_view(self, output: str) -> LoadedModel:
        try:
            spec = self.signature.head_output(output)  # checked before the graph is read: refusals stay cheap
            graph = self.derived.weights.model()  # the graph read at load, never the file again
            signature = self._probed(self.signature.with_head(graph.graph, spec))
        except SignatureError as error:
            raise InvalidInput(f"model {self.name!r} cannot explain output {shortened(output)!r}: {error}") from error
        sample = sample_shape(signature, self.config)
        return replace(
            self,
            config=replace(self.config, labels=(), output_kind=None, output_name=output),
            signature=signature,
            session=self.session.reading(output),
            num_classes=signature.num_classes,
            checks=MethodChecks(support_problems(graph, signature.input.name, output, sample)),
        )

    def _probed(self, signature: ModelSignature) -> ModelSignature:
        """The head's signature with its shape completed by one run of a zero image, where the graph and shape
        inference leave its classes unknown (as the loader does for the default head)."""
        if signature.num_classes is not None:
            return signature
        sample = sample_shape(signature, self.config)
        if sample is None:
            raise FailedPrecondition(
                f"the graph does not declare the shape of output {signature.output.name!r} of model {self.name!r} "
                "and shape inference cannot tell it; give the input size (preprocessing.resize [height, width] or "
                "center_crop in config.yaml) so one run can"
            )
        probe = self.session.reading(signature.output.name)
        return signature.with_output_shape(probe.run_output(np.zeros((1, *sample), dtype=np.float32)).shape)

    def derived_session(self, key: Hashable, build: GraphBuilder, token: CancelToken | None = None) -> DerivedSession:
        """The session of a graph derived from this model (see engine/derived.py), built once per key; the token's
        cancel or deadline ends a wait for another request's build or for a build turn."""
        return self.derived.session(key, build, token)

    def label_of(self, class_index: int) -> str:
        return self.labels[class_index] if class_index < len(self.labels) else ""

    def to_probabilities(self, scores: np.ndarray) -> np.ndarray:
        """Probabilities from (n, K) scores: softmax of logits, the scores themselves for probability outputs."""
        if self.output_kind == "probabilities":
            return scores
        shifted = scores - scores.max(axis=-1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=-1, keepdims=True)


def sample_shape(signature: ModelSignature, config: ModelConfig) -> tuple[int, ...] | None:
    """The image's shape without the batch, in the model's layout, when the graph or the config fixes it."""
    height, width = signature.spatial_size
    if (height is None or width is None) and config.preprocessing is not None:
        height, width = target_size(config.preprocessing) or (None, None)
    channels = signature.channels or (config.preprocessing.channels if config.preprocessing else None)
    if None in (height, width, channels):
        return None
    return image_shape(channels, height, width, signature.layout)
