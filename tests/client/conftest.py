"""An in-process fake ExplainService on a loopback port: the client tests make real gRPC calls without the server.

(Fixtures only: with --import-mode=importlib, test modules cannot import from a conftest.)
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import numpy as np
import pytest

from onnxplain.client.tensors import encode_tensor
from onnxplain.v1 import explain_service_pb2 as pb
from onnxplain.v1 import explain_service_pb2_grpc as pb_grpc
from onnxplain.v1 import model_pb2, tensor_pb2

LABELS = ["cat", "dog", "bird"]
MAP_SHAPE = (4, 5)


def scores_tensor() -> tensor_pb2.Tensor:
    return encode_tensor(np.array([3.0, 2.0, 1.0], dtype=np.float32))


def target_attribution(class_index: int, overlay: bool) -> pb.TargetAttribution:
    """A map filled with its class index, so tests can tell which target ended up where."""
    return pb.TargetAttribution(
        class_index=class_index,
        label=LABELS[class_index],
        score=float(3 - class_index),
        attribution=encode_tensor(np.full(MAP_SHAPE, class_index, dtype=np.float32)),
        overlay_png=f"png-{class_index}".encode() if overlay else b"",
    )


def expand_targets(targets: list[pb.Target]) -> list[int]:
    indices: list[int] = []
    for target in targets:
        kind = target.WhichOneof("kind")
        if kind == "class_index":
            indices.append(target.class_index)
        elif kind == "label":
            indices.append(LABELS.index(target.label))
        else:
            indices.extend(range(target.top_k))
    return indices or [0]


def explain_response(request: pb.ExplainRequest) -> pb.ExplainResponse:
    targets = expand_targets(list(request.targets))
    explanations = [
        pb.ImageExplanation(
            attributions=[target_attribution(index, request.render.overlay_png) for index in targets],
            scores=scores_tensor(),
            geometry=pb.Geometry(original_height=8, original_width=10, crop_height=4, crop_width=5)
            if image.WhichOneof("source") == "encoded"
            else None,
        )
        for image in request.images
    ]
    parameters = dict(request.parameters)
    parameters.setdefault("stride", pb.Parameter(integer=2))
    return pb.ExplainResponse(
        model_name=request.model_name,
        model_version=request.model_version or "1",
        method=request.method,
        explanations=explanations,
        parameters=parameters,
        providers=["CPUExecutionProvider"],
        cost=pb.Cost(forward_passes=10 * len(targets), batch_size=8, runs=2, elapsed_seconds=0.25),
    )


def status(name: str, version: str = "1", state: int = model_pb2.MODEL_STATE_READY) -> model_pb2.ModelStatus:
    return model_pb2.ModelStatus(name=name, version=version, state=state)


class FakeExplainService(pb_grpc.ExplainServiceServicer):
    """Answers like the real service in shape; the model "missing" is NOT_FOUND everywhere."""

    def __init__(self) -> None:
        self.requests: list[object] = []

    def _check(self, request: object, context: grpc.ServicerContext) -> None:
        self.requests.append(request)
        if getattr(request, "model_name", "") == "missing":
            context.abort(grpc.StatusCode.NOT_FOUND, "model 'missing' not found")

    def Predict(self, request, context):
        self._check(request, context)
        top = [
            pb.ClassScore(class_index=i, label=LABELS[i], score=3.0 - i, probability=0.5 / (i + 1))
            for i in range(min(request.top_k, 3))
        ]
        predictions = [pb.Prediction(scores=scores_tensor(), top=top) for _ in request.images]
        return pb.PredictResponse(model_name=request.model_name, model_version="1", predictions=predictions)

    def Explain(self, request, context):
        self._check(request, context)
        return explain_response(request)

    def ExplainStream(self, request, context):
        self._check(request.request, context)
        yield pb.ExplainStreamResponse(progress=pb.Progress(passes_done=1, passes_total=2, elapsed_seconds=0.1))
        partial = pb.PartialAttribution(
            image_index=0, attribution=target_attribution(0, False), progress=pb.Progress(passes_done=1, passes_total=2)
        )
        yield pb.ExplainStreamResponse(partial=partial)
        yield pb.ExplainStreamResponse()  # an event kind this client does not know: skipped
        yield pb.ExplainStreamResponse(progress=pb.Progress(passes_done=2, passes_total=2, elapsed_seconds=0.2))
        yield pb.ExplainStreamResponse(result=explain_response(request.request))

    def ListMethods(self, request, context):
        self._check(request, context)
        spec = model_pb2.ParameterSpec(name="window", type="ints", default_value="8,8", description="patch size")
        method = model_pb2.MethodInfo(
            name="occlusion",
            family=model_pb2.METHOD_FAMILY_PERTURBATION,
            description="slides a patch",
            parameters=[spec],
        )
        return pb.ListMethodsResponse(methods=[method])

    def ListModels(self, request, context):
        self._check(request, context)
        broken = model_pb2.ModelStatus(
            name="broken", version="2", state=model_pb2.MODEL_STATE_UNAVAILABLE, reason="bad graph"
        )
        return pb.ListModelsResponse(models=[status("resnet"), broken])

    def GetModelMetadata(self, request, context):
        self._check(request, context)
        return pb.GetModelMetadataResponse(
            metadata=model_pb2.ModelMetadata(
                name=request.model_name,
                version="1",
                available_versions=["1"],
                state=model_pb2.MODEL_STATE_READY,
                labels=LABELS,
                layout=model_pb2.LAYOUT_NCHW,
                num_classes=3,
                heads=["scores", "boxes"],
            )
        )

    def LoadModel(self, request, context):
        self._check(request, context)
        return pb.LoadModelResponse(status=status(request.model_name, request.model_version or "1"))

    def UnloadModel(self, request, context):
        self._check(request, context)
        unloaded = model_pb2.MODEL_STATE_UNLOADED
        return pb.UnloadModelResponse(statuses=[status(request.model_name, v, unloaded) for v in ("1", "2")])

    def ReloadModel(self, request, context):
        self._check(request, context)
        return pb.ReloadModelResponse(status=status(request.model_name, request.model_version or "1"))


@pytest.fixture
def fake_service() -> FakeExplainService:
    return FakeExplainService()


@pytest.fixture
def server_address(fake_service: FakeExplainService) -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_ExplainServiceServicer_to_server(fake_service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)
