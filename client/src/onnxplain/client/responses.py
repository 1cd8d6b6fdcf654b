"""Response messages to result types; pure functions shared by Client and AsyncClient."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias, TypeVar, cast

import numpy as np
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from onnxplain.client.catalog import (
    Layout,
    MethodFamily,
    MethodInfo,
    MethodSupport,
    MetricInfo,
    ModelMetadata,
    ModelState,
    ModelStatus,
    OutputKind,
    ParameterSpec,
    TensorInfo,
)
from onnxplain.client.parameters import from_parameters
from onnxplain.client.results import (
    ClassScore,
    Cost,
    Evaluation,
    ExplainerScores,
    Explanation,
    Geometry,
    PartialMap,
    Prediction,
    Progress,
    SanityCheck,
    TargetScores,
)
from onnxplain.client.tensors import decode_tensor
from onnxplain.v1 import explain_service_pb2 as pb
from onnxplain.v1 import model_pb2

T = TypeVar("T")

StreamEvent: TypeAlias = Progress | PartialMap | Explanation | list[Explanation]
"""What explain_stream yields: progress, partial maps, then the result shaped as explain() returns it."""


def parse_predict_response(response: pb.PredictResponse, *, single: bool) -> Prediction | list[Prediction]:
    return _one_or_all([parse_prediction(prediction) for prediction in response.predictions], single=single)


def parse_prediction(prediction: pb.Prediction) -> Prediction:
    top = [ClassScore(item.class_index, item.label, item.score, item.probability) for item in prediction.top]
    return Prediction(scores=decode_tensor(prediction.scores), top=top)


def parse_explain_response(
    response: pb.ExplainResponse, *, single: bool, keep_target_axis: bool
) -> Explanation | list[Explanation]:
    explanations = [
        parse_explanation(explanation, response, keep_target_axis=keep_target_axis)
        for explanation in response.explanations
    ]
    return _one_or_all(explanations, single=single)


def parse_explanation(
    explanation: pb.ImageExplanation, response: pb.ExplainResponse, *, keep_target_axis: bool
) -> Explanation:
    """One image's maps plus the request-wide fields (method, cost, parameters) every image shares."""
    attributions = explanation.attributions
    overlays = [item.overlay_png for item in attributions]
    return Explanation(
        attribution=stack_maps([decode_tensor(item.attribution) for item in attributions], keep_target_axis),
        targets=[item.class_index for item in attributions],
        labels=[item.label for item in attributions],
        target_scores=[item.score for item in attributions],
        scores=decode_tensor(explanation.scores),
        method=response.method,
        model=response.model_name,
        version=response.model_version,
        cost=parse_cost(response.cost),
        parameters=from_parameters(response.parameters),
        geometry=parse_geometry(explanation.geometry) if explanation.HasField("geometry") else None,
        overlays=overlays if any(overlays) else [],
        providers=list(response.providers),
        segments=decode_tensor(explanation.segments) if explanation.HasField("segments") else None,
        extras={name: decode_tensor(tensor) for name, tensor in explanation.extras.items()},
        renderings=dict(explanation.renderings),
        original_attribution=_original_maps(attributions, keep_target_axis),
    )


def _original_maps(attributions: Sequence[pb.TargetAttribution], keep_target_axis: bool) -> np.ndarray | None:
    maps = [decode_tensor(item.original_attribution) for item in attributions if item.HasField("original_attribution")]
    return stack_maps(maps, keep_target_axis) if maps and len(maps) == len(attributions) else None


def stack_maps(maps: Sequence[np.ndarray], keep_target_axis: bool) -> np.ndarray:
    """One map without a target axis when a single target was asked for; otherwise (T, ...) stacked."""
    if len(maps) == 1 and not keep_target_axis:
        return maps[0]
    if not maps:
        return np.empty((0,), dtype=np.float32)
    return np.stack(maps)


def parse_evaluation(response: pb.EvaluateResponse) -> Evaluation:
    return Evaluation(
        model=response.model_name,
        version=response.model_version,
        metrics=list(response.metrics),
        explainers=[_explainer_scores(explainer) for explainer in response.explainers],
        parameters=from_parameters(response.parameters),
        cost=parse_cost(response.cost),
    )


def _explainer_scores(explainer: pb.ExplainerEvaluation) -> ExplainerScores:
    sanity = explainer.sanity
    return ExplainerScores(
        name=explainer.name,
        method=explainer.method,
        parameters=from_parameters(explainer.parameters),
        images=[[_target_scores(target) for target in image.targets] for image in explainer.images],
        means=dict(explainer.means),
        sanity=SanityCheck(list(sanity.layers), list(sanity.rank_correlations), sanity.flagged, sanity.threshold)
        if explainer.HasField("sanity")
        else None,
        cost=parse_cost(explainer.cost),
    )


def _target_scores(target: pb.TargetScores) -> TargetScores:
    curves = {name: decode_tensor(curve) for name, curve in target.curves.items()}
    return TargetScores(target.class_index, target.label, dict(target.values), curves)


def parse_metric_info(metric: model_pb2.MetricInfo) -> MetricInfo:
    return MetricInfo(
        metric.name,
        metric.description,
        _parameter_specs(metric.parameters),
        metric.higher_is_better,
        list(metric.requires),
    )


def parse_cost(cost: pb.Cost) -> Cost:
    return Cost(cost.forward_passes, cost.backward_passes, cost.batch_size, cost.runs, cost.elapsed_seconds)


def parse_geometry(geometry: pb.Geometry) -> Geometry:
    return Geometry(
        geometry.original_height,
        geometry.original_width,
        geometry.resized_height,
        geometry.resized_width,
        geometry.crop_top,
        geometry.crop_left,
        geometry.crop_height,
        geometry.crop_width,
    )


def parse_progress(progress: pb.Progress) -> Progress:
    return Progress(progress.passes_done, progress.passes_total, progress.elapsed_seconds)


def parse_partial(partial: pb.PartialAttribution) -> PartialMap:
    attribution = partial.attribution
    return PartialMap(
        image_index=partial.image_index,
        class_index=attribution.class_index,
        label=attribution.label,
        score=attribution.score,
        attribution=decode_tensor(attribution.attribution),
        overlay=attribution.overlay_png,
        progress=parse_progress(partial.progress) if partial.HasField("progress") else None,
    )


def parse_stream_event(
    message: pb.ExplainStreamResponse, *, single: bool, keep_target_axis: bool
) -> StreamEvent | None:
    """None for an event this client does not know (a newer server), which the clients skip."""
    kind = message.WhichOneof("event")
    if kind == "progress":
        return parse_progress(message.progress)
    if kind == "partial":
        return parse_partial(message.partial)
    if kind == "result":
        return parse_explain_response(message.result, single=single, keep_target_axis=keep_target_axis)
    return None


def parse_model_status(status: model_pb2.ModelStatus) -> ModelStatus:
    return ModelStatus(status.name, status.version, _state(status.state), status.reason)


def parse_metadata(metadata: model_pb2.ModelMetadata) -> ModelMetadata:
    return ModelMetadata(
        name=metadata.name,
        version=metadata.version,
        versions=list(metadata.available_versions),
        state=_state(metadata.state),
        reason=metadata.reason,
        inputs=[parse_tensor_info(info) for info in metadata.inputs],
        outputs=[parse_tensor_info(info) for info in metadata.outputs],
        layout=cast(Layout, enum_name(model_pb2.Layout, metadata.layout, "LAYOUT_")),
        labels=list(metadata.labels),
        output_kind=cast(OutputKind, enum_name(model_pb2.OutputKind, metadata.output_kind, "OUTPUT_KIND_")),
        methods=[parse_method_support(method) for method in metadata.methods],
        providers=list(metadata.providers),
        num_classes=metadata.num_classes,
        max_batch_size=metadata.max_batch_size,
        preprocessing=parse_preprocessing(metadata.preprocessing) if metadata.HasField("preprocessing") else None,
        heads=list(metadata.heads),
    )


def parse_tensor_info(info: model_pb2.TensorInfo) -> TensorInfo:
    return TensorInfo(info.name, info.dtype, list(info.shape), list(info.dim_names))


def parse_method_support(method: model_pb2.MethodSupport) -> MethodSupport:
    return MethodSupport(method.name, _family(method.family), method.supported, method.reason)


def parse_preprocessing(preprocessing: model_pb2.Preprocessing) -> dict[str, Any]:
    """A plain dict, ready for JSON, with enums as lower-case names."""
    return {
        "resize": list(preprocessing.resize),
        "center_crop": list(preprocessing.center_crop),
        "color_order": enum_name(model_pb2.ColorOrder, preprocessing.color_order, "COLOR_ORDER_"),
        "scale": preprocessing.scale,
        "mean": list(preprocessing.mean),
        "std": list(preprocessing.std),
        "layout": enum_name(model_pb2.Layout, preprocessing.layout, "LAYOUT_"),
        "interpolation": preprocessing.interpolation,
    }


def parse_method_info(method: model_pb2.MethodInfo) -> MethodInfo:
    return MethodInfo(method.name, _family(method.family), method.description, _parameter_specs(method.parameters))


def _parameter_specs(specs: Sequence[model_pb2.ParameterSpec]) -> list[ParameterSpec]:
    return [ParameterSpec(spec.name, spec.type, spec.default_value, spec.description) for spec in specs]


def enum_name(enum_type: EnumTypeWrapper, value: int, prefix: str) -> str:
    """MODEL_STATE_READY -> "ready"; a value from a newer server reads "unknown_<n>" instead of failing."""
    try:
        return enum_type.Name(value).removeprefix(prefix).lower()
    except ValueError:
        return f"unknown_{value}"


def _state(value: int) -> ModelState:
    return cast(ModelState, enum_name(model_pb2.ModelState, value, "MODEL_STATE_"))


def _family(value: int) -> MethodFamily:
    return cast(MethodFamily, enum_name(model_pb2.MethodFamily, value, "METHOD_FAMILY_"))


def _one_or_all(results: list[T], *, single: bool) -> T | list[T]:
    if single:
        if len(results) != 1:
            raise ValueError(f"the server sent {len(results)} results for one image")
        return results[0]
    return results
