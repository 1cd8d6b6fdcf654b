"""What each RPC sends and how its answer is read: all the logic Client and AsyncClient share.

A Call names the stub method, carries the request, and parses each response message, so the two clients differ
only in how they invoke the stub (blocking or awaited).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, Literal, TypeAlias, TypeVar

from google.protobuf.message import Message

from onnxplain.client.catalog import MethodInfo, MetricInfo, ModelMetadata, ModelStatus
from onnxplain.client.errors import InvalidArgumentError
from onnxplain.client.evaluation import ExplainersLike, RegionsLike, to_explainers, to_regions
from onnxplain.client.images import ImagesLike, SegmentsLike, to_images, with_segments
from onnxplain.client.parameters import to_parameters
from onnxplain.client.responses import (
    StreamEvent,
    parse_evaluation,
    parse_explain_response,
    parse_metadata,
    parse_method_info,
    parse_metric_info,
    parse_model_status,
    parse_predict_response,
    parse_stream_event,
)
from onnxplain.client.results import Evaluation, Explanation, Prediction
from onnxplain.client.targets import TargetsLike, keeps_target_axis, to_targets
from onnxplain.v1 import explain_service_pb2 as pb

R = TypeVar("R")

AttributionShapeName: TypeAlias = Literal["spatial", "input"]
ScoreSpaceName: TypeAlias = Literal["raw", "probability"]
PolarityName: TypeAlias = Literal["absolute", "positive", "negative", "both"]

_ATTRIBUTION_SHAPES = {"spatial": pb.ATTRIBUTION_SHAPE_SPATIAL, "input": pb.ATTRIBUTION_SHAPE_INPUT}
_SCORE_SPACES = {"raw": pb.SCORE_SPACE_RAW, "probability": pb.SCORE_SPACE_PROBABILITY}
_POLARITIES = {
    "absolute": pb.POLARITY_ABSOLUTE,
    "positive": pb.POLARITY_POSITIVE,
    "negative": pb.POLARITY_NEGATIVE,
    "both": pb.POLARITY_BOTH,
}


@dataclass(frozen=True)
class Call(Generic[R]):
    rpc: str
    """Name of the ExplainServiceStub attribute to invoke."""
    request: Message
    parse: Callable[[Any], R]
    """Reads one response message (for a stream: one event, None for events to skip)."""


def predict(
    model: str, images: ImagesLike, *, version: str, top_k: int, output: str = ""
) -> Call[Prediction | list[Prediction]]:
    messages, single = to_images(images)
    request = pb.PredictRequest(model_name=model, model_version=version, top_k=top_k, output=output)
    _add_images(request, messages)
    return Call("Predict", request, partial(parse_predict_response, single=single))


@dataclass(frozen=True)
class ExplainArgs:
    """The arguments explain and explain_stream share, so both clients forward them without re-listing them."""

    model: str
    images: ImagesLike
    method: str
    target: TargetsLike
    version: str
    attribution_shape: AttributionShapeName
    score_space: ScoreSpaceName
    overlay: bool
    colormap: str | None
    params: Mapping[str, object]
    segments: SegmentsLike = None
    polarity: PolarityName | None = None
    original_maps: bool = False
    # The head to explain ("" is the model's default).
    output: str = ""


def explain(args: ExplainArgs) -> Call[Explanation | list[Explanation]]:
    request, single = build_explain_request(args)
    parse = partial(parse_explain_response, single=single, keep_target_axis=keeps_target_axis(args.target))
    return Call("Explain", request, parse)


def explain_stream(args: ExplainArgs) -> Call[StreamEvent | None]:
    request, single = build_explain_request(args)
    parse = partial(parse_stream_event, single=single, keep_target_axis=keeps_target_axis(args.target))
    stream_request = pb.ExplainStreamRequest()
    stream_request.request.CopyFrom(request)
    return Call("ExplainStream", stream_request, parse)


def build_explain_request(args: ExplainArgs) -> tuple[pb.ExplainRequest, bool]:
    """The request, and whether a single image was passed (the caller then gets a single Explanation)."""
    messages, single = to_images(args.images)
    messages = with_segments(messages, args.segments, single)
    request = pb.ExplainRequest(
        model_name=args.model,
        model_version=args.version,
        method=args.method,
        parameters=to_parameters(args.params),
        targets=to_targets(args.target),
        attribution_shape=_choose(_ATTRIBUTION_SHAPES, args.attribution_shape, "attribution_shape"),
        score_space=_choose(_SCORE_SPACES, args.score_space, "score_space"),
        original_maps=args.original_maps,
        output=args.output,
    )
    _add_images(request, messages)
    # Naming a colormap or a polarity only makes sense for an overlay, so it asks for one.
    if args.overlay or args.colormap or args.polarity:
        polarity = _choose(_POLARITIES, args.polarity, "polarity") if args.polarity else pb.POLARITY_UNSPECIFIED
        request.render.CopyFrom(pb.RenderOptions(overlay_png=True, colormap=args.colormap or "", polarity=polarity))
    return request, single


@dataclass(frozen=True)
class EvaluateArgs:
    model: str
    images: ImagesLike
    explainers: ExplainersLike
    metrics: Sequence[str]
    target: TargetsLike
    version: str
    score_space: ScoreSpaceName | None
    regions: RegionsLike
    params: Mapping[str, object]
    output: str = ""


def evaluate(args: EvaluateArgs) -> Call[Evaluation]:
    messages, _ = to_images(args.images)
    request = pb.EvaluateRequest(
        model_name=args.model,
        model_version=args.version,
        targets=to_targets(args.target),
        explainers=to_explainers(args.explainers),
        metrics=list(args.metrics),
        parameters=to_parameters(args.params),
        regions=to_regions(args.regions),
        score_space=_choose(_SCORE_SPACES, args.score_space, "score_space") if args.score_space else 0,
        output=args.output,
    )
    _add_images(request, messages)
    return Call("Evaluate", request, parse_evaluation)


def list_metrics() -> Call[list[MetricInfo]]:
    return Call(
        "ListMetrics", pb.ListMetricsRequest(), lambda response: [parse_metric_info(m) for m in response.metrics]
    )


def list_methods() -> Call[list[MethodInfo]]:
    return Call("ListMethods", pb.ListMethodsRequest(), _parse_methods)


def list_models() -> Call[list[ModelStatus]]:
    return Call("ListModels", pb.ListModelsRequest(), _parse_models)


def model_metadata(model: str, version: str) -> Call[ModelMetadata]:
    request = pb.GetModelMetadataRequest(model_name=model, model_version=version)
    return Call("GetModelMetadata", request, _parse_metadata)


def load_model(model: str, version: str) -> Call[ModelStatus]:
    return Call("LoadModel", pb.LoadModelRequest(model_name=model, model_version=version), _parse_status)


def unload_model(model: str, version: str) -> Call[list[ModelStatus]]:
    return Call("UnloadModel", pb.UnloadModelRequest(model_name=model, model_version=version), _parse_statuses)


def reload_model(model: str, version: str) -> Call[ModelStatus]:
    return Call("ReloadModel", pb.ReloadModelRequest(model_name=model, model_version=version), _parse_status)


def _parse_methods(response: pb.ListMethodsResponse) -> list[MethodInfo]:
    return [parse_method_info(method) for method in response.methods]


def _parse_metrics(response: pb.ListMetricsResponse) -> list[MetricInfo]:
    return [parse_metric_info(metric) for metric in response.metrics]


def _parse_models(response: pb.ListModelsResponse) -> list[ModelStatus]:
    return [parse_model_status(status) for status in response.models]


def _parse_metadata(response: pb.GetModelMetadataResponse) -> ModelMetadata:
    return parse_metadata(response.metadata)


def _parse_status(response: pb.LoadModelResponse | pb.ReloadModelResponse) -> ModelStatus:
    return parse_model_status(response.status)


def _parse_statuses(response: pb.UnloadModelResponse) -> list[ModelStatus]:
    return [parse_model_status(status) for status in response.statuses]


def _add_images(request: pb.PredictRequest | pb.ExplainRequest | pb.EvaluateRequest, images: list[pb.Image]) -> None:
    """CopyFrom each image into the request: with protobuf's upb runtime, sub-messages passed to a constructor take
    a slower copy (measured for 32 images of 224x224: 31.8 ms to build the request against 26.6 with CopyFrom)."""
    for image in images:
        request.images.add().CopyFrom(image)


def _choose(choices: Mapping[str, int], name: str, argument: str) -> Any:
    if name not in choices:
        raise InvalidArgumentError(f"{argument} must be one of {', '.join(map(repr, choices))}, got {name!r}")
    return choices[name]
