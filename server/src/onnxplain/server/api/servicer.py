"""onnxplain.v1.ExplainService over grpc.aio: each RPC converts, hands the handler to a worker thread, converts back.

ONNX Runtime never runs on the event loop. A cancelled or expired call cancels its CancelToken, which terminates
the ONNX Runtime run in flight and stops further batches.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

import grpc

from onnxplain.server.api import convert
from onnxplain.server.api.status import streaming, unary
from onnxplain.server.api.workers import in_worker
from onnxplain.server.engine.cancel import CancelToken
from onnxplain.server.evaluation.metrics import METRICS
from onnxplain.server.handlers.evaluate import evaluate
from onnxplain.server.handlers.explain import explain
from onnxplain.server.handlers.models import describe_model
from onnxplain.server.handlers.predict import predict
from onnxplain.server.methods.registry import METHODS
from onnxplain.server.repository.registry import ModelRegistry
from onnxplain.server.settings import ServerSettings
from onnxplain.v1 import explain_service_pb2 as pb
from onnxplain.v1 import explain_service_pb2_grpc as pb_grpc

Result = TypeVar("Result")
log = logging.getLogger("onnxplain.server")


class ExplainServicer(pb_grpc.ExplainServiceServicer):
    def __init__(self, registry: ModelRegistry, settings: ServerSettings, executor: Executor) -> None:
        self._registry = registry
        self._settings = settings
        self._executor = executor

    async def _in_worker(self, work: Callable[[CancelToken], Result]) -> Result:
        return await in_worker(self._executor, work)

    @unary
    async def Predict(self, request: pb.PredictRequest, context: grpc.aio.ServicerContext) -> pb.PredictResponse:
        query = convert.predict_query(request)
        result = await self._in_worker(functools.partial(predict, self._registry, query, self._settings.limits))
        return convert.predict_response(result)

    @unary
    async def Explain(self, request: pb.ExplainRequest, context: grpc.aio.ServicerContext) -> pb.ExplainResponse:
        query = convert.explain_query(request)
        result = await self._in_worker(lambda token: explain(self._registry, query, self._settings, token))
        return convert.explain_response(result)

    @streaming
    async def ExplainStream(
        self, request: pb.ExplainStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExplainStreamResponse]:
        query = convert.explain_query(request.request)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Any] = asyncio.Queue()

        def report(progress: Any) -> None:
            loop.call_soon_threadsafe(events.put_nowait, progress)

        task = asyncio.ensure_future(
            self._in_worker(lambda token: explain(self._registry, query, self._settings, token, report))
        )
        task.add_done_callback(lambda _: events.put_nowait(None))
        try:
            while (event := await events.get()) is not None:
                for message in convert.progress_messages(event):
                    yield message
            yield pb.ExplainStreamResponse(result=convert.explain_response(task.result()))
        finally:
            task.cancel()

    @unary
    async def Evaluate(self, request: pb.EvaluateRequest, context: grpc.aio.ServicerContext) -> pb.EvaluateResponse:
        query = convert.evaluate_query(request)
        result = await self._in_worker(lambda token: evaluate(self._registry, query, self._settings, token))
        return convert.evaluate_response(result)

    @unary
    async def ListMetrics(self, request: pb.ListMetricsRequest, context: Any) -> pb.ListMetricsResponse:
        return pb.ListMetricsResponse(metrics=[convert.metric_info(metric) for metric in METRICS.values()])

    @unary
    async def ListMethods(self, request: pb.ListMethodsRequest, context: Any) -> pb.ListMethodsResponse:
        methods = sorted(METHODS.values(), key=lambda m: m.name)
        return pb.ListMethodsResponse(methods=[convert.method_info(m) for m in methods])

    @unary
    async def ListModels(self, request: pb.ListModelsRequest, context: Any) -> pb.ListModelsResponse:
        self._registry.rescan()
        return pb.ListModelsResponse(models=[convert.model_status(s) for s in self._registry.statuses()])

    @unary
    async def GetModelMetadata(self, request: pb.GetModelMetadataRequest, context: Any) -> pb.GetModelMetadataResponse:
        description = describe_model(self._registry, request.model_name, request.model_version)
        return pb.GetModelMetadataResponse(metadata=convert.model_metadata(description))

    @unary
    async def LoadModel(self, request: pb.LoadModelRequest, context: Any) -> pb.LoadModelResponse:
        status = await self._in_worker(lambda _: self._registry.load(request.model_name, request.model_version))
        return pb.LoadModelResponse(status=convert.model_status(status))

    @unary
    async def ReloadModel(self, request: pb.ReloadModelRequest, context: Any) -> pb.ReloadModelResponse:
        status = await self._in_worker(lambda _: self._registry.load(request.model_name, request.model_version))
        return pb.ReloadModelResponse(status=convert.model_status(status))

    @unary
    async def UnloadModel(self, request: pb.UnloadModelRequest, context: Any) -> pb.UnloadModelResponse:
        statuses = self._registry.unload(request.model_name, request.model_version)
        return pb.UnloadModelResponse(statuses=[convert.model_status(s) for s in statuses])
