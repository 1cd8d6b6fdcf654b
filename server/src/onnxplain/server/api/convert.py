"""Protobuf <-> handler values. The only module that knows both; servicers stay a few lines each."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from onnxplain.server.errors import InvalidInput
from onnxplain.server.evaluation.metrics import Metric
from onnxplain.server.handlers import schema
from onnxplain.server.handlers.models import ModelDescription
from onnxplain.server.imaging.geometry import Geometry
from onnxplain.server.methods.base import AttributionMethod
from onnxplain.server.methods.parameters import Param
from onnxplain.server.repository.registry import VersionStatus
from onnxplain.v1 import explain_service_pb2 as pb
from onnxplain.v1 import model_pb2 as model_pb
from onnxplain.v1 import tensor_pb2 as tensor_pb

DTYPES: dict[int, np.dtype] = {
    tensor_pb.DATA_TYPE_FLOAT32: np.dtype("<f4"),
    tensor_pb.DATA_TYPE_FLOAT16: np.dtype("<f2"),
    tensor_pb.DATA_TYPE_FLOAT64: np.dtype("<f8"),
    tensor_pb.DATA_TYPE_UINT8: np.dtype("u1"),
    tensor_pb.DATA_TYPE_INT32: np.dtype("<i4"),
    tensor_pb.DATA_TYPE_INT64: np.dtype("<i8"),
}
# Far beyond any image or map, and within what numpy can shape (an empty tensor may name any dimensions).
MAX_TENSOR_RANK = 8
MAX_TENSOR_DIMENSION = 2**31 - 1
_STATES = {
    "unloaded": model_pb.MODEL_STATE_UNLOADED,
    "loading": model_pb.MODEL_STATE_LOADING,
    "ready": model_pb.MODEL_STATE_READY,
    "unavailable": model_pb.MODEL_STATE_UNAVAILABLE,
}
_FAMILIES = {
    "perturbation": model_pb.METHOD_FAMILY_PERTURBATION,
    "gradient": model_pb.METHOD_FAMILY_GRADIENT,
    "cam": model_pb.METHOD_FAMILY_CAM,
    "relevance": model_pb.METHOD_FAMILY_RELEVANCE,
    "visualization": model_pb.METHOD_FAMILY_VISUALIZATION,
}
_LAYOUTS = {"NCHW": model_pb.LAYOUT_NCHW, "NHWC": model_pb.LAYOUT_NHWC}
_COLORS = {"rgb": model_pb.COLOR_ORDER_RGB, "bgr": model_pb.COLOR_ORDER_BGR, "gray": model_pb.COLOR_ORDER_GRAY}
_OUTPUT_KINDS = {"logits": model_pb.OUTPUT_KIND_LOGITS, "probabilities": model_pb.OUTPUT_KIND_PROBABILITIES}
_PARAM_KINDS = {
    "int": "int",
    "float": "float",
    "bool": "bool",
    "str": "string",
    "pair": "ints",
    "float_or_str": "float",
}


# ---- requests -------------------------------------------------------------------------------------------------


def tensor_to_array(tensor: tensor_pb.Tensor) -> np.ndarray:
    dtype = DTYPES.get(tensor.dtype)
    if dtype is None:
        known = tensor.dtype in tensor_pb.DataType.values()
        name = tensor_pb.DataType.Name(tensor.dtype) if known else f"value {tensor.dtype}"
        raise InvalidInput(
            f"tensor dtype {name} is not supported; send DATA_TYPE_FLOAT32 (DATA_TYPE_UINT8 for a model with a uint8 "
            "input)"
        )
    shape = list(tensor.shape)
    if any(d < 0 for d in shape):
        raise InvalidInput(f"tensor shape {shape} has a negative dimension")
    if len(shape) > MAX_TENSOR_RANK or any(d > MAX_TENSOR_DIMENSION for d in shape):
        raise InvalidInput(
            f"tensor shape {shape} is beyond the limits: at most {MAX_TENSOR_RANK} dimensions of at most "
            f"{MAX_TENSOR_DIMENSION} each"
        )
    expected = int(np.prod(shape, dtype=object)) * dtype.itemsize if shape else dtype.itemsize
    if expected != len(tensor.data):
        raise InvalidInput(
            f"tensor of shape {shape} and dtype {dtype.name} needs {expected} bytes, got {len(tensor.data)}"
        )
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def image_inputs(images: Iterable[pb.Image]) -> list[schema.ImageInput]:
    """The request's images; a malformed one is named by its index, as the handlers name images they refuse."""
    inputs = []
    for index, image in enumerate(images):
        try:
            inputs.append(image_input(image))
        except InvalidInput as error:
            raise InvalidInput(f"image {index}: {error}") from error
    return inputs


def image_input(image: pb.Image) -> schema.ImageInput:
    source = image.WhichOneof("source")
    segments = tensor_to_array(image.segments) if image.HasField("segments") else None
    if source == "encoded":
        return schema.ImageInput(encoded=image.encoded, segments=segments)
    if source == "tensor":
        return schema.ImageInput(tensor=tensor_to_array(image.tensor), segments=segments)
    return schema.ImageInput(segments=segments)


def predict_query(request: pb.PredictRequest) -> schema.PredictQuery:
    return schema.PredictQuery(
        model=request.model_name,
        version=request.model_version,
        images=image_inputs(request.images),
        top_k=request.top_k,
        output=request.output,
    )


def explain_query(request: pb.ExplainRequest) -> schema.ExplainQuery:
    return schema.ExplainQuery(
        model=request.model_name,
        version=request.model_version,
        images=image_inputs(request.images),
        method=request.method,
        parameters={name: parameter_value(name, value) for name, value in request.parameters.items()},
        targets=[target_query(target) for target in request.targets],
        attribution_shape="input" if request.attribution_shape == pb.ATTRIBUTION_SHAPE_INPUT else "spatial",
        score_space="probability" if request.score_space == pb.SCORE_SPACE_PROBABILITY else "raw",
        render=render_query(request.render) if request.render.overlay_png else None,
        original_maps=request.original_maps,
        output=request.output,
    )


def evaluate_query(request: pb.EvaluateRequest) -> schema.EvaluateQuery:
    spaces = {pb.SCORE_SPACE_RAW: "raw", pb.SCORE_SPACE_PROBABILITY: "probability"}
    return schema.EvaluateQuery(
        model=request.model_name,
        version=request.model_version,
        images=image_inputs(request.images),
        explainers=[explainer_query(explainer) for explainer in request.explainers],
        targets=[target_query(target) for target in request.targets],
        metrics=list(request.metrics),
        parameters={name: parameter_value(name, value) for name, value in request.parameters.items()},
        regions=[region_query(region) for region in request.regions],
        score_space=spaces.get(request.score_space),
        output=request.output,
    )


def explainer_query(explainer: pb.Explainer) -> schema.ExplainerQuery:
    return schema.ExplainerQuery(
        name=explainer.name,
        method=explainer.method,
        parameters={name: parameter_value(name, value) for name, value in explainer.parameters.items()},
        attributions=[tensor_to_array(tensor) for tensor in explainer.attributions],
    )


def region_query(region: pb.Region) -> schema.RegionQuery:
    kind = region.WhichOneof("kind")
    if kind == "box":
        box = region.box
        return schema.RegionQuery(box=(box.top, box.left, box.height, box.width))
    if kind == "mask":
        return schema.RegionQuery(mask=tensor_to_array(region.mask))
    return schema.RegionQuery()  # refused with the image's index once the images are known


def parameter_value(name: str, parameter: pb.Parameter) -> Any:
    kind = parameter.WhichOneof("value")
    if kind is None:
        raise InvalidInput(f"parameter {name!r} has no value")
    if kind == "numbers":
        return list(parameter.numbers.values)
    return getattr(parameter, kind)


def target_query(target: pb.Target) -> schema.TargetQuery:
    kind = target.WhichOneof("kind")
    if kind is None:
        raise InvalidInput("a target has none of class_index, label or top_k set")
    return schema.TargetQuery(**{kind: getattr(target, kind)})


def render_query(render: pb.RenderOptions) -> schema.RenderQuery:
    defaults = schema.RenderQuery()
    return schema.RenderQuery(
        colormap=render.colormap or defaults.colormap,
        clip_percentile=render.clip_percentile or defaults.clip_percentile,
        alpha=render.alpha or defaults.alpha,
        polarity=_polarity(render.polarity, defaults.polarity),
    )


def _polarity(value: int, default: str) -> str:
    if value == pb.POLARITY_UNSPECIFIED:
        return default
    if value not in _POLARITIES:
        raise InvalidInput(f"unknown render polarity {value}; valid: {', '.join(map(str, _POLARITIES))}")
    return _POLARITIES[value]


_POLARITIES = {
    pb.POLARITY_ABSOLUTE: "absolute",
    pb.POLARITY_POSITIVE: "positive",
    pb.POLARITY_NEGATIVE: "negative",
    pb.POLARITY_BOTH: "both",
}


# ---- responses ------------------------------------------------------------------------------------------------


def array_to_tensor(array: np.ndarray) -> tensor_pb.Tensor:
    array = np.ascontiguousarray(array, dtype="<f4")
    return tensor_pb.Tensor(dtype=tensor_pb.DATA_TYPE_FLOAT32, shape=array.shape, data=array.tobytes())


def segments_to_tensor(segments: np.ndarray) -> tensor_pb.Tensor:
    segments = np.ascontiguousarray(segments, dtype="<i4")
    return tensor_pb.Tensor(dtype=tensor_pb.DATA_TYPE_INT32, shape=segments.shape, data=segments.tobytes())


def extra_to_tensor(value: np.ndarray) -> tensor_pb.Tensor:
    """Integer extras (class maps) travel as int32, everything else as float32."""
    return segments_to_tensor(value) if np.issubdtype(value.dtype, np.integer) else array_to_tensor(value)


def parameter_message(value: Any) -> pb.Parameter:
    if isinstance(value, bool):
        return pb.Parameter(flag=value)
    if isinstance(value, int):
        return pb.Parameter(integer=value)
    if isinstance(value, float):
        return pb.Parameter(number=value)
    if isinstance(value, str):
        return pb.Parameter(text=value)
    return pb.Parameter(numbers=pb.NumberList(values=[float(v) for v in value]))


def _parameters(values: dict[str, Any]) -> dict[str, pb.Parameter]:
    """Parameters as sent back: those left to be chosen per image (None) are left out."""
    return {name: parameter_message(value) for name, value in values.items() if value is not None}


def predict_response(result: schema.PredictResult) -> pb.PredictResponse:
    return pb.PredictResponse(
        model_name=result.model,
        model_version=result.version,
        predictions=[
            pb.Prediction(
                scores=array_to_tensor(prediction.scores),
                top=[
                    pb.ClassScore(class_index=s.class_index, label=s.label, score=s.score, probability=s.probability)
                    for s in prediction.top
                ],
            )
            for prediction in result.predictions
        ],
    )


def target_attribution(target: schema.TargetMap) -> pb.TargetAttribution:
    original = target.original_attribution
    return pb.TargetAttribution(
        class_index=target.class_index,
        label=target.label,
        score=target.score,
        attribution=array_to_tensor(target.attribution),
        overlay_png=target.overlay_png,
        original_attribution=None if original is None else array_to_tensor(original),
    )


def geometry_message(geometry: Geometry) -> pb.Geometry:
    return pb.Geometry(**vars(geometry))


def explain_response(result: schema.ExplainResult) -> pb.ExplainResponse:
    return pb.ExplainResponse(
        model_name=result.model,
        model_version=result.version,
        method=result.method,
        explanations=[
            pb.ImageExplanation(
                attributions=[target_attribution(t) for t in explanation.attributions],
                scores=array_to_tensor(explanation.scores),
                geometry=geometry_message(explanation.geometry) if explanation.geometry else None,
                segments=None if explanation.segments is None else segments_to_tensor(explanation.segments),
                extras={name: extra_to_tensor(value) for name, value in explanation.extras.items()},
                renderings=explanation.renderings,
            )
            for explanation in result.explanations
        ],
        cost=pb.Cost(**vars(result.cost)),
        parameters=_parameters(result.parameters),
        providers=result.providers,
    )


def progress_messages(progress: schema.ExplainProgress) -> list[pb.ExplainStreamResponse]:
    """One Progress event, then one PartialAttribution per target when partial maps came with it."""
    counts = pb.Progress(
        passes_done=progress.passes_done, passes_total=progress.passes_total, elapsed_seconds=progress.elapsed_seconds
    )
    partials = [
        pb.ExplainStreamResponse(
            partial=pb.PartialAttribution(
                image_index=progress.image_index, attribution=target_attribution(target), progress=counts
            )
        )
        for target in progress.partial
    ]
    return [pb.ExplainStreamResponse(progress=counts), *partials]


def evaluate_response(result: schema.EvaluateResult) -> pb.EvaluateResponse:
    return pb.EvaluateResponse(
        model_name=result.model,
        model_version=result.version,
        metrics=result.metrics,
        explainers=[explainer_evaluation(explainer) for explainer in result.explainers],
        parameters=_parameters(result.parameters),
        cost=pb.Cost(**vars(result.cost)),
    )


def explainer_evaluation(evaluation: schema.ExplainerEvaluation) -> pb.ExplainerEvaluation:
    sanity = evaluation.sanity
    return pb.ExplainerEvaluation(
        name=evaluation.name,
        method=evaluation.method,
        parameters=_parameters(evaluation.parameters),
        images=[pb.ImageScores(targets=[target_scores(t) for t in targets]) for targets in evaluation.images],
        means=evaluation.means,
        sanity=None if sanity is None else pb.SanityCheck(**vars(sanity)),
        cost=pb.Cost(**vars(evaluation.cost)),
    )


def target_scores(scores: schema.TargetScores) -> pb.TargetScores:
    return pb.TargetScores(
        class_index=scores.class_index,
        label=scores.label,
        values=scores.values,
        curves={name: array_to_tensor(curve) for name, curve in scores.curves.items()},
    )


def model_status(status: VersionStatus) -> model_pb.ModelStatus:
    return model_pb.ModelStatus(
        name=status.name, version=status.version, state=_STATES[status.state], reason=status.reason
    )


def model_metadata(description: ModelDescription) -> model_pb.ModelMetadata:
    status = description.status
    metadata = model_pb.ModelMetadata(
        name=status.name,
        version=status.version,
        available_versions=description.versions,
        state=_STATES[status.state],
        reason=status.reason,
        methods=[
            model_pb.MethodSupport(name=m.name, family=_FAMILIES[m.family], supported=m.supported, reason=m.reason)
            for m in description.methods
        ],
    )
    model = description.model
    if model is None:
        return metadata
    signature = model.signature
    metadata.inputs.extend(_tensor_info(spec) for spec in signature.inputs)
    metadata.outputs.extend(_tensor_info(spec) for spec in signature.outputs)
    metadata.heads.extend(signature.heads)
    metadata.layout = _LAYOUTS[signature.layout]
    metadata.labels.extend(model.labels)
    metadata.output_kind = _OUTPUT_KINDS[model.output_kind]
    metadata.providers.extend(model.session.providers)
    metadata.num_classes = model.num_classes or 0
    metadata.max_batch_size = signature.fixed_batch or model.config.max_batch_size or 0
    if model.preprocessing is not None:
        spec = model.preprocessing
        metadata.preprocessing.CopyFrom(
            model_pb.Preprocessing(
                resize=spec.resize,
                center_crop=spec.center_crop,
                color_order=_COLORS[spec.color],
                scale=spec.scale,
                mean=spec.mean,
                std=spec.std,
                layout=_LAYOUTS[spec.layout],
                interpolation=spec.interpolation,
            )
        )
    return metadata


def method_info(method: AttributionMethod) -> model_pb.MethodInfo:
    return model_pb.MethodInfo(
        name=method.name,
        family=_FAMILIES[method.family],
        description=method.description,
        parameters=parameter_specs(method.parameters),
    )


def metric_info(metric: Metric) -> model_pb.MetricInfo:
    return model_pb.MetricInfo(
        name=metric.name,
        description=metric.description,
        parameters=parameter_specs(metric.parameters),
        higher_is_better=metric.higher_is_better,
        requires=metric.requires,
    )


def parameter_specs(parameters: tuple[Param, ...]) -> list[model_pb.ParameterSpec]:
    return [
        model_pb.ParameterSpec(
            name=p.name,
            type=_PARAM_KINDS[p.kind],
            description=p.description,
            default_value="auto" if p.default is None else str(p.default),
        )
        for p in parameters
    ]


def _tensor_info(spec: Any) -> model_pb.TensorInfo:
    return model_pb.TensorInfo(
        name=spec.name, dtype=spec.dtype, shape=[-1 if d is None else d for d in spec.shape], dim_names=spec.dim_names
    )
