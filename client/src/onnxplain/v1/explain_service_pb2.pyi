from onnxplain.v1 import model_pb2 as _model_pb2
from onnxplain.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AttributionShape(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ATTRIBUTION_SHAPE_UNSPECIFIED: _ClassVar[AttributionShape]
    ATTRIBUTION_SHAPE_SPATIAL: _ClassVar[AttributionShape]
    ATTRIBUTION_SHAPE_INPUT: _ClassVar[AttributionShape]

class ScoreSpace(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCORE_SPACE_UNSPECIFIED: _ClassVar[ScoreSpace]
    SCORE_SPACE_RAW: _ClassVar[ScoreSpace]
    SCORE_SPACE_PROBABILITY: _ClassVar[ScoreSpace]

class Polarity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POLARITY_UNSPECIFIED: _ClassVar[Polarity]
    POLARITY_ABSOLUTE: _ClassVar[Polarity]
    POLARITY_POSITIVE: _ClassVar[Polarity]
    POLARITY_NEGATIVE: _ClassVar[Polarity]
    POLARITY_BOTH: _ClassVar[Polarity]
ATTRIBUTION_SHAPE_UNSPECIFIED: AttributionShape
ATTRIBUTION_SHAPE_SPATIAL: AttributionShape
ATTRIBUTION_SHAPE_INPUT: AttributionShape
SCORE_SPACE_UNSPECIFIED: ScoreSpace
SCORE_SPACE_RAW: ScoreSpace
SCORE_SPACE_PROBABILITY: ScoreSpace
POLARITY_UNSPECIFIED: Polarity
POLARITY_ABSOLUTE: Polarity
POLARITY_POSITIVE: Polarity
POLARITY_NEGATIVE: Polarity
POLARITY_BOTH: Polarity

class Image(_message.Message):
    __slots__ = ("encoded", "tensor", "segments")
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    encoded: bytes
    tensor: _tensor_pb2.Tensor
    segments: _tensor_pb2.Tensor
    def __init__(self, encoded: _Optional[bytes] = ..., tensor: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., segments: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...

class Target(_message.Message):
    __slots__ = ("class_index", "label", "top_k")
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    class_index: int
    label: str
    top_k: int
    def __init__(self, class_index: _Optional[int] = ..., label: _Optional[str] = ..., top_k: _Optional[int] = ...) -> None: ...

class NumberList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class Parameter(_message.Message):
    __slots__ = ("number", "integer", "flag", "text", "numbers")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    INTEGER_FIELD_NUMBER: _ClassVar[int]
    FLAG_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    NUMBERS_FIELD_NUMBER: _ClassVar[int]
    number: float
    integer: int
    flag: bool
    text: str
    numbers: NumberList
    def __init__(self, number: _Optional[float] = ..., integer: _Optional[int] = ..., flag: _Optional[bool] = ..., text: _Optional[str] = ..., numbers: _Optional[_Union[NumberList, _Mapping]] = ...) -> None: ...

class RenderOptions(_message.Message):
    __slots__ = ("overlay_png", "colormap", "clip_percentile", "alpha", "polarity")
    OVERLAY_PNG_FIELD_NUMBER: _ClassVar[int]
    COLORMAP_FIELD_NUMBER: _ClassVar[int]
    CLIP_PERCENTILE_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    POLARITY_FIELD_NUMBER: _ClassVar[int]
    overlay_png: bool
    colormap: str
    clip_percentile: float
    alpha: float
    polarity: Polarity
    def __init__(self, overlay_png: _Optional[bool] = ..., colormap: _Optional[str] = ..., clip_percentile: _Optional[float] = ..., alpha: _Optional[float] = ..., polarity: _Optional[_Union[Polarity, str]] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("model_name", "model_version", "images", "top_k", "output")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    images: _containers.RepeatedCompositeFieldContainer[Image]
    top_k: int
    output: str
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., top_k: _Optional[int] = ..., output: _Optional[str] = ...) -> None: ...

class ClassScore(_message.Message):
    __slots__ = ("class_index", "label", "score", "probability")
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    class_index: int
    label: str
    score: float
    probability: float
    def __init__(self, class_index: _Optional[int] = ..., label: _Optional[str] = ..., score: _Optional[float] = ..., probability: _Optional[float] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("scores", "top")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    scores: _tensor_pb2.Tensor
    top: _containers.RepeatedCompositeFieldContainer[ClassScore]
    def __init__(self, scores: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., top: _Optional[_Iterable[_Union[ClassScore, _Mapping]]] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "predictions")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    predictions: _containers.RepeatedCompositeFieldContainer[Prediction]
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., predictions: _Optional[_Iterable[_Union[Prediction, _Mapping]]] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("model_name", "model_version", "images", "method", "parameters", "targets", "attribution_shape", "score_space", "render", "original_maps", "output")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Parameter
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Parameter, _Mapping]] = ...) -> None: ...
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTION_SHAPE_FIELD_NUMBER: _ClassVar[int]
    SCORE_SPACE_FIELD_NUMBER: _ClassVar[int]
    RENDER_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_MAPS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    images: _containers.RepeatedCompositeFieldContainer[Image]
    method: str
    parameters: _containers.MessageMap[str, Parameter]
    targets: _containers.RepeatedCompositeFieldContainer[Target]
    attribution_shape: AttributionShape
    score_space: ScoreSpace
    render: RenderOptions
    original_maps: bool
    output: str
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., method: _Optional[str] = ..., parameters: _Optional[_Mapping[str, Parameter]] = ..., targets: _Optional[_Iterable[_Union[Target, _Mapping]]] = ..., attribution_shape: _Optional[_Union[AttributionShape, str]] = ..., score_space: _Optional[_Union[ScoreSpace, str]] = ..., render: _Optional[_Union[RenderOptions, _Mapping]] = ..., original_maps: _Optional[bool] = ..., output: _Optional[str] = ...) -> None: ...

class Geometry(_message.Message):
    __slots__ = ("original_height", "original_width", "resized_height", "resized_width", "crop_top", "crop_left", "crop_height", "crop_width")
    ORIGINAL_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_WIDTH_FIELD_NUMBER: _ClassVar[int]
    RESIZED_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    RESIZED_WIDTH_FIELD_NUMBER: _ClassVar[int]
    CROP_TOP_FIELD_NUMBER: _ClassVar[int]
    CROP_LEFT_FIELD_NUMBER: _ClassVar[int]
    CROP_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CROP_WIDTH_FIELD_NUMBER: _ClassVar[int]
    original_height: int
    original_width: int
    resized_height: int
    resized_width: int
    crop_top: int
    crop_left: int
    crop_height: int
    crop_width: int
    def __init__(self, original_height: _Optional[int] = ..., original_width: _Optional[int] = ..., resized_height: _Optional[int] = ..., resized_width: _Optional[int] = ..., crop_top: _Optional[int] = ..., crop_left: _Optional[int] = ..., crop_height: _Optional[int] = ..., crop_width: _Optional[int] = ...) -> None: ...

class TargetAttribution(_message.Message):
    __slots__ = ("class_index", "label", "score", "attribution", "overlay_png", "original_attribution")
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_PNG_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_ATTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    class_index: int
    label: str
    score: float
    attribution: _tensor_pb2.Tensor
    overlay_png: bytes
    original_attribution: _tensor_pb2.Tensor
    def __init__(self, class_index: _Optional[int] = ..., label: _Optional[str] = ..., score: _Optional[float] = ..., attribution: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., overlay_png: _Optional[bytes] = ..., original_attribution: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...

class ImageExplanation(_message.Message):
    __slots__ = ("attributions", "scores", "geometry", "segments", "extras", "renderings")
    class ExtrasEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    class RenderingsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    ATTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    GEOMETRY_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    EXTRAS_FIELD_NUMBER: _ClassVar[int]
    RENDERINGS_FIELD_NUMBER: _ClassVar[int]
    attributions: _containers.RepeatedCompositeFieldContainer[TargetAttribution]
    scores: _tensor_pb2.Tensor
    geometry: Geometry
    segments: _tensor_pb2.Tensor
    extras: _containers.MessageMap[str, _tensor_pb2.Tensor]
    renderings: _containers.ScalarMap[str, bytes]
    def __init__(self, attributions: _Optional[_Iterable[_Union[TargetAttribution, _Mapping]]] = ..., scores: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., geometry: _Optional[_Union[Geometry, _Mapping]] = ..., segments: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., extras: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., renderings: _Optional[_Mapping[str, bytes]] = ...) -> None: ...

class Cost(_message.Message):
    __slots__ = ("forward_passes", "backward_passes", "batch_size", "runs", "elapsed_seconds")
    FORWARD_PASSES_FIELD_NUMBER: _ClassVar[int]
    BACKWARD_PASSES_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    forward_passes: int
    backward_passes: int
    batch_size: int
    runs: int
    elapsed_seconds: float
    def __init__(self, forward_passes: _Optional[int] = ..., backward_passes: _Optional[int] = ..., batch_size: _Optional[int] = ..., runs: _Optional[int] = ..., elapsed_seconds: _Optional[float] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "method", "explanations", "cost", "parameters", "providers")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Parameter
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Parameter, _Mapping]] = ...) -> None: ...
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    EXPLANATIONS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    method: str
    explanations: _containers.RepeatedCompositeFieldContainer[ImageExplanation]
    cost: Cost
    parameters: _containers.MessageMap[str, Parameter]
    providers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., method: _Optional[str] = ..., explanations: _Optional[_Iterable[_Union[ImageExplanation, _Mapping]]] = ..., cost: _Optional[_Union[Cost, _Mapping]] = ..., parameters: _Optional[_Mapping[str, Parameter]] = ..., providers: _Optional[_Iterable[str]] = ...) -> None: ...

class ExplainStreamRequest(_message.Message):
    __slots__ = ("request",)
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    request: ExplainRequest
    def __init__(self, request: _Optional[_Union[ExplainRequest, _Mapping]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("passes_done", "passes_total", "elapsed_seconds")
    PASSES_DONE_FIELD_NUMBER: _ClassVar[int]
    PASSES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    passes_done: int
    passes_total: int
    elapsed_seconds: float
    def __init__(self, passes_done: _Optional[int] = ..., passes_total: _Optional[int] = ..., elapsed_seconds: _Optional[float] = ...) -> None: ...

class PartialAttribution(_message.Message):
    __slots__ = ("image_index", "attribution", "progress")
    IMAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    image_index: int
    attribution: TargetAttribution
    progress: Progress
    def __init__(self, image_index: _Optional[int] = ..., attribution: _Optional[_Union[TargetAttribution, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ...) -> None: ...

class ExplainStreamResponse(_message.Message):
    __slots__ = ("progress", "partial", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    partial: PartialAttribution
    result: ExplainResponse
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., partial: _Optional[_Union[PartialAttribution, _Mapping]] = ..., result: _Optional[_Union[ExplainResponse, _Mapping]] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("top", "left", "height", "width")
    TOP_FIELD_NUMBER: _ClassVar[int]
    LEFT_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    top: int
    left: int
    height: int
    width: int
    def __init__(self, top: _Optional[int] = ..., left: _Optional[int] = ..., height: _Optional[int] = ..., width: _Optional[int] = ...) -> None: ...

class Region(_message.Message):
    __slots__ = ("box", "mask")
    BOX_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    box: Box
    mask: _tensor_pb2.Tensor
    def __init__(self, box: _Optional[_Union[Box, _Mapping]] = ..., mask: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...

class Explainer(_message.Message):
    __slots__ = ("name", "method", "parameters", "attributions")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Parameter
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Parameter, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    method: str
    parameters: _containers.MessageMap[str, Parameter]
    attributions: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Tensor]
    def __init__(self, name: _Optional[str] = ..., method: _Optional[str] = ..., parameters: _Optional[_Mapping[str, Parameter]] = ..., attributions: _Optional[_Iterable[_Union[_tensor_pb2.Tensor, _Mapping]]] = ...) -> None: ...

class EvaluateRequest(_message.Message):
    __slots__ = ("model_name", "model_version", "images", "targets", "explainers", "metrics", "parameters", "regions", "score_space", "output")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Parameter
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Parameter, _Mapping]] = ...) -> None: ...
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    EXPLAINERS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    SCORE_SPACE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    images: _containers.RepeatedCompositeFieldContainer[Image]
    targets: _containers.RepeatedCompositeFieldContainer[Target]
    explainers: _containers.RepeatedCompositeFieldContainer[Explainer]
    metrics: _containers.RepeatedScalarFieldContainer[str]
    parameters: _containers.MessageMap[str, Parameter]
    regions: _containers.RepeatedCompositeFieldContainer[Region]
    score_space: ScoreSpace
    output: str
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., targets: _Optional[_Iterable[_Union[Target, _Mapping]]] = ..., explainers: _Optional[_Iterable[_Union[Explainer, _Mapping]]] = ..., metrics: _Optional[_Iterable[str]] = ..., parameters: _Optional[_Mapping[str, Parameter]] = ..., regions: _Optional[_Iterable[_Union[Region, _Mapping]]] = ..., score_space: _Optional[_Union[ScoreSpace, str]] = ..., output: _Optional[str] = ...) -> None: ...

class TargetScores(_message.Message):
    __slots__ = ("class_index", "label", "values", "curves")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class CurvesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    CURVES_FIELD_NUMBER: _ClassVar[int]
    class_index: int
    label: str
    values: _containers.ScalarMap[str, float]
    curves: _containers.MessageMap[str, _tensor_pb2.Tensor]
    def __init__(self, class_index: _Optional[int] = ..., label: _Optional[str] = ..., values: _Optional[_Mapping[str, float]] = ..., curves: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ...) -> None: ...

class ImageScores(_message.Message):
    __slots__ = ("targets",)
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    targets: _containers.RepeatedCompositeFieldContainer[TargetScores]
    def __init__(self, targets: _Optional[_Iterable[_Union[TargetScores, _Mapping]]] = ...) -> None: ...

class SanityCheck(_message.Message):
    __slots__ = ("layers", "rank_correlations", "flagged", "threshold")
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    RANK_CORRELATIONS_FIELD_NUMBER: _ClassVar[int]
    FLAGGED_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    layers: _containers.RepeatedScalarFieldContainer[str]
    rank_correlations: _containers.RepeatedScalarFieldContainer[float]
    flagged: bool
    threshold: float
    def __init__(self, layers: _Optional[_Iterable[str]] = ..., rank_correlations: _Optional[_Iterable[float]] = ..., flagged: _Optional[bool] = ..., threshold: _Optional[float] = ...) -> None: ...

class ExplainerEvaluation(_message.Message):
    __slots__ = ("name", "method", "parameters", "images", "means", "sanity", "cost")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Parameter
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Parameter, _Mapping]] = ...) -> None: ...
    class MeansEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    MEANS_FIELD_NUMBER: _ClassVar[int]
    SANITY_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    name: str
    method: str
    parameters: _containers.MessageMap[str, Parameter]
    images: _containers.RepeatedCompositeFieldContainer[ImageScores]
    means: _containers.ScalarMap[str, float]
    sanity: SanityCheck
    cost: Cost
    def __init__(self, name: _Optional[str] = ..., method: _Optional[str] = ..., parameters: _Optional[_Mapping[str, Parameter]] = ..., images: _Optional[_Iterable[_Union[ImageScores, _Mapping]]] = ..., means: _Optional[_Mapping[str, float]] = ..., sanity: _Optional[_Union[SanityCheck, _Mapping]] = ..., cost: _Optional[_Union[Cost, _Mapping]] = ...) -> None: ...

class EvaluateResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "metrics", "explainers", "parameters", "cost")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Parameter
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Parameter, _Mapping]] = ...) -> None: ...
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    EXPLAINERS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    metrics: _containers.RepeatedScalarFieldContainer[str]
    explainers: _containers.RepeatedCompositeFieldContainer[ExplainerEvaluation]
    parameters: _containers.MessageMap[str, Parameter]
    cost: Cost
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., metrics: _Optional[_Iterable[str]] = ..., explainers: _Optional[_Iterable[_Union[ExplainerEvaluation, _Mapping]]] = ..., parameters: _Optional[_Mapping[str, Parameter]] = ..., cost: _Optional[_Union[Cost, _Mapping]] = ...) -> None: ...

class ListMethodsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListMethodsResponse(_message.Message):
    __slots__ = ("methods",)
    METHODS_FIELD_NUMBER: _ClassVar[int]
    methods: _containers.RepeatedCompositeFieldContainer[_model_pb2.MethodInfo]
    def __init__(self, methods: _Optional[_Iterable[_Union[_model_pb2.MethodInfo, _Mapping]]] = ...) -> None: ...

class ListMetricsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListMetricsResponse(_message.Message):
    __slots__ = ("metrics",)
    METRICS_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.RepeatedCompositeFieldContainer[_model_pb2.MetricInfo]
    def __init__(self, metrics: _Optional[_Iterable[_Union[_model_pb2.MetricInfo, _Mapping]]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[_model_pb2.ModelStatus]
    def __init__(self, models: _Optional[_Iterable[_Union[_model_pb2.ModelStatus, _Mapping]]] = ...) -> None: ...

class GetModelMetadataRequest(_message.Message):
    __slots__ = ("model_name", "model_version")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class GetModelMetadataResponse(_message.Message):
    __slots__ = ("metadata",)
    METADATA_FIELD_NUMBER: _ClassVar[int]
    metadata: _model_pb2.ModelMetadata
    def __init__(self, metadata: _Optional[_Union[_model_pb2.ModelMetadata, _Mapping]] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ("model_name", "model_version")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class LoadModelResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: _model_pb2.ModelStatus
    def __init__(self, status: _Optional[_Union[_model_pb2.ModelStatus, _Mapping]] = ...) -> None: ...

class UnloadModelRequest(_message.Message):
    __slots__ = ("model_name", "model_version")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class UnloadModelResponse(_message.Message):
    __slots__ = ("statuses",)
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    statuses: _containers.RepeatedCompositeFieldContainer[_model_pb2.ModelStatus]
    def __init__(self, statuses: _Optional[_Iterable[_Union[_model_pb2.ModelStatus, _Mapping]]] = ...) -> None: ...

class ReloadModelRequest(_message.Message):
    __slots__ = ("model_name", "model_version")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class ReloadModelResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: _model_pb2.ModelStatus
    def __init__(self, status: _Optional[_Union[_model_pb2.ModelStatus, _Mapping]] = ...) -> None: ...
