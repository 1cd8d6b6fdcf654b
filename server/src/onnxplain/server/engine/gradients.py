"""Backward sessions of a served model: the forward graph plus VJP nodes, built once per (output, rule set, layer,
score space, image size) through the derived-graph cache, and run on images with one seed row per image.

A seed row is a weight vector over the classes, so a row can ask for one class (one-hot), a combination, or nothing
(zeros, when only the scores are wanted); many rows run in one ONNX Runtime run. A row can also ask for a class by
rank (the top class, the second...), which the graph picks from the scores it computes (backward/ranked_seed.py).

A rule set keys the cache by its structure only: its numeric parameters (LRP's epsilon, gamma, alpha, beta, z-box
bounds) are graph inputs that each run feeds from the request's rule set (RuleSet.inputs), so a client varying them, or
a raw-tensor model whose z-box bounds follow each image's range, reuses one graph. They are fed once per run, common
to all its rows, so concurrent requests' runs merge into one batch when they feed the same values (engine/session.py
run_guarded).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import onnx

from onnxplain.server.engine.backward.builder import BackwardGraph, MissingRule, differentiate, gradient_output
from onnxplain.server.engine.backward.prepare import (
    ConversionError,
    ShapeProbe,
    infer_shapes,
    prepare_forward,
)
from onnxplain.server.engine.backward.ranked_seed import RANK_INPUT, add_ranked_seed
from onnxplain.server.engine.backward.rulesets.base import GRADIENT, RuleSet
from onnxplain.server.engine.backward.targets import (
    FeatureMap,
    default_feature_map,
    explained_tensor,
    feature_map_named,
)
from onnxplain.server.engine.cancel import CancelToken
from onnxplain.server.engine.derived import DerivedSession
from onnxplain.server.engine.session import FixedBatchRuns, run_in_chunks
from onnxplain.server.errors import FailedPrecondition, InvalidInput, OnnxplainError, UnsupportedGraph
from onnxplain.server.repository.model import LoadedModel
from onnxplain.server.repository.signature import ModelSignature

_FEATURE_MAP_KEY = "onnxplain.feature_map"
# The graph's parameter inputs (BackwardGraph.parameters), which the session does not list among its inputs.
_PARAMETERS_KEY = "onnxplain.parameters"
log = logging.getLogger("onnxplain.server")


@dataclass(frozen=True)
class BackwardSpec:
    """What a method needs from a backward graph. `layer` None with `cam_layer` True means the default feature map."""

    ruleset: RuleSet = GRADIENT
    input_gradient: bool = True
    layer: str | None = None
    cam_layer: bool = False
    probability: bool = False
    # A tensor to differentiate instead of the class scores (feature visualisation of a channel); seeds then have
    # that tensor's shape.
    objective: str | None = None


@dataclass(frozen=True)
class BackwardResult:
    """Per row: the explained scores (logits, or probabilities when asked), seedᵀ·∂score/∂input, and the layer's
    activation and gradient when a layer was read out."""

    scores: np.ndarray
    input_gradient: np.ndarray | None
    layer: np.ndarray | None
    layer_gradient: np.ndarray | None


class BackwardSession(FixedBatchRuns):
    def __init__(
        self,
        session: DerivedSession,
        feature_map: FeatureMap | None,
        spec: BackwardSpec,
        fixed_batch: int | None,
        model_output: str,
    ) -> None:
        self._session = session
        self.feature_map = feature_map
        self.spec = spec
        self.fixed_batch = fixed_batch
        # The graph's first output is the explained tensor: the model's own output unless a trailing Softmax was
        # skipped (logits) or added (probability), so only then are its rows the scores a forward would give.
        self.scores_are_model_output = session.output_names[0] == model_output
        # Whether rows can ask for a class by rank (a graph whose target holds one score per class).
        self.takes_ranks = RANK_INPUT in session.input_names
        # The rule parameters the graph reads, fed with this request's values on every run.
        self._parameters = _parameter_feeds(json.loads(session.metadata.get(_PARAMETERS_KEY, "[]")), spec)
        self._image_input, self._seed_input = (name for name in session.input_names if name != RANK_INPUT)
        self.seed_shape = session.input_shapes[self._seed_input]

    def run(
        self,
        images: np.ndarray,
        seeds: np.ndarray,
        token: CancelToken | None = None,
        ranks: np.ndarray | None = None,
    ) -> BackwardResult:
        """images (n, *input shape), seeds (n, K) -> one BackwardResult over the n rows. `ranks` (n,) adds to each
        row's seed its r-th highest scoring class (r = -1: none); only for sessions that `takes_ranks`."""
        seeds = np.ascontiguousarray(seeds, dtype=np.float32).reshape(len(seeds), *self.seed_shape[1:])
        images = np.ascontiguousarray(images, dtype=np.float32)
        arrays = [images, seeds]
        if self.takes_ranks:
            arrays.append(np.full((len(seeds), 1), -1, np.int64) if ranks is None else _column(ranks))
        elif ranks is not None:
            raise ValueError("this backward graph picks no classes by rank (its target is not one score per class)")
        names = [self._image_input, self._seed_input, RANK_INPUT][: len(arrays)]

        mergeable = self.fixed_batch is None

        def run_once(chunk: list[np.ndarray]) -> list[np.ndarray]:
            feed = dict(zip(names, chunk, strict=True))
            return self._session.run(feed, token, mergeable=mergeable, shared=self._parameters)

        outputs = run_in_chunks(arrays, self.fixed_batch, run_once)
        scores = outputs[0].reshape(len(images), -1)
        named = dict(zip(self._session.output_names, outputs, strict=True))
        layer = self.feature_map.tensor if self.feature_map else None
        return BackwardResult(
            scores=scores,
            input_gradient=named.get(gradient_output(self._image_input)) if self.spec.input_gradient else None,
            layer=named.get(layer) if layer else None,
            layer_gradient=named.get(gradient_output(layer)) if layer else None,
        )


def backward_graph(
    model: onnx.ModelProto, signature: ModelSignature, sample_shape: Sequence[int], spec: BackwardSpec
) -> tuple[BackwardGraph, FeatureMap | None]:
    """The backward graph of a classifier for images of `sample_shape` (no batch): the image size fixed, the opset
    raised, the explained tensor and feature map chosen. `model` is modified. MissingRule and ConversionError say
    why a model cannot have one; InvalidInput / FailedPrecondition come from a layer the spec names or needs."""
    model = prepare_forward(model, signature.input.name, sample_shape)
    target = spec.objective or explained_tensor(model, signature.output.name, spec.probability, signature.class_axis)
    probe = ShapeProbe(signature.input.name, tuple(sample_shape))
    feature_map = _feature_map(model, target, spec, probe) if spec.cam_layer or spec.layer else None
    wrt = [signature.input.name] if spec.input_gradient else []
    readouts = [feature_map.tensor] if feature_map else []
    built = differentiate(model, target, [*wrt, *readouts], ruleset=spec.ruleset, readouts=readouts, probe=probe)
    return built, feature_map


def backward_session(
    model: LoadedModel, sample_shape: Sequence[int], spec: BackwardSpec, token: CancelToken | None = None
) -> BackwardSession:
    """The model's backward session for images of `sample_shape` (no batch), built on first use; `token` ends a wait
    for the build."""

    def build(full: onnx.ModelProto) -> onnx.ModelProto:
        try:
            built, feature_map = backward_graph(full, model.signature, sample_shape, spec)
        except (MissingRule, ConversionError) as error:
            raise UnsupportedGraph(f"gradient methods are unavailable for model {model.name!r}: {error}") from error
        except OnnxplainError:  # a layer the request names, or a feature map the model lacks
            raise
        except Exception as error:  # a rule or ONNX's tools failing on this graph: the model cannot have it
            log.exception("building a backward graph of model %r failed", model.name)
            raise UnsupportedGraph(
                f"building the backward graph of model {model.name!r} failed ({type(error).__name__}: {error})"
            ) from error
        notes = {_FEATURE_MAP_KEY: json.dumps(asdict(feature_map))} if feature_map is not None else {}
        if built.parameters:
            notes[_PARAMETERS_KEY] = json.dumps(built.parameters)
        if notes:
            onnx.helper.set_model_props(built.model, notes)
        if spec.objective is None and model.num_classes:
            add_ranked_seed(built, model.num_classes)
        return built.model

    # The head a request explains (repository/model.py LoadedModel.head) picks the graph's target.
    key = ("backward", model.signature.output.name, spec, tuple(sample_shape))
    session = model.derived_session(key, build, token)
    noted = session.metadata.get(_FEATURE_MAP_KEY)
    feature_map = None
    if noted:
        fields = json.loads(noted)
        feature_map = FeatureMap(fields["tensor"], fields["channel_axis"], tuple(fields["spatial_axes"]))
    return BackwardSession(session, feature_map, spec, model.signature.fixed_batch, model.signature.output.name)


def _parameter_feeds(names: Sequence[str], spec: BackwardSpec) -> dict[str, np.ndarray]:
    """The values of the graph's parameter inputs in the request's rule set (the graph was built for a rule set of the
    same name, so it names no parameter the request lacks)."""
    missing = [name for name in names if name not in spec.ruleset.inputs]
    if missing:
        raise ValueError(f"rule set {spec.ruleset.name!r} has no value for graph inputs {', '.join(missing)}")
    return {name: spec.ruleset.inputs[name] for name in names}


def _column(ranks: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(ranks, dtype=np.int64).reshape(-1, 1)


def _feature_map(model: onnx.ModelProto, target: str, spec: BackwardSpec, probe: ShapeProbe) -> FeatureMap:
    _, shapes, _ = infer_shapes(model, probe)
    if spec.layer:
        try:
            return feature_map_named(spec.layer, shapes)
        except ValueError as error:
            raise InvalidInput(str(error)) from error
    found = default_feature_map(model.graph, target, shapes)
    if found is None:
        raise FailedPrecondition("no 4-D feature map feeds the classifier head; name one with the 'layer' parameter")
    return found
