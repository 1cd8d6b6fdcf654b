"""onnxplain client: explain ONNX image classifiers served by onnxplain, from blocking or asyncio code.

from onnxplain.client import Client, TopK

with Client("localhost:50051") as client:
    prediction = client.predict("resnet18", "cat.jpg")
    explanation = client.explain("resnet18", "cat.jpg", method="occlusion", target=TopK(3), window=(16, 16))
    explanation.attribution  # (3, H, W) float32
"""

from onnxplain.client.aio import AsyncClient
from onnxplain.client.calls import AttributionShapeName, PolarityName, ScoreSpaceName
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
from onnxplain.client.channel import MAX_MESSAGE_BYTES
from onnxplain.client.errors import InvalidArgumentError, OnnxplainError, ServerUnreachableError
from onnxplain.client.evaluation import ExplainersLike, MethodSpec, Region, RegionsLike
from onnxplain.client.images import ImageLike, ImagesLike, SegmentsLike
from onnxplain.client.parameters import ParameterValue
from onnxplain.client.responses import StreamEvent
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
from onnxplain.client.sync import Client
from onnxplain.client.targets import TargetLike, TargetsLike, TopK

__all__ = [
    "MAX_MESSAGE_BYTES",
    "AsyncClient",
    "AttributionShapeName",
    "ClassScore",
    "Client",
    "Cost",
    "Evaluation",
    "ExplainerScores",
    "ExplainersLike",
    "Explanation",
    "Geometry",
    "ImageLike",
    "ImagesLike",
    "InvalidArgumentError",
    "Layout",
    "MethodFamily",
    "MethodInfo",
    "MethodSpec",
    "MethodSupport",
    "MetricInfo",
    "ModelMetadata",
    "ModelState",
    "ModelStatus",
    "OnnxplainError",
    "OutputKind",
    "ParameterSpec",
    "ParameterValue",
    "PartialMap",
    "PolarityName",
    "Prediction",
    "Progress",
    "Region",
    "RegionsLike",
    "SanityCheck",
    "ScoreSpaceName",
    "SegmentsLike",
    "ServerUnreachableError",
    "StreamEvent",
    "TargetLike",
    "TargetScores",
    "TargetsLike",
    "TensorInfo",
    "TopK",
]
