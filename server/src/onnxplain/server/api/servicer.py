"""onnxplain.v1.ExplainService over grpc.aio: each RPC converts, hands the handler to a worker thread, converts back.

ONNX Runtime never runs on the event loop, and neither does the conversion of results to messages (a map set can be
hundreds of megabytes). A long explanation waits for its turns before it takes a worker thread (api/workers.py). A
cancelled or expired call cancels its CancelToken, which terminates the ONNX Runtime run in flight and stops further
batches.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

import grpc

from onnxplain.server.api import convert
from onnxplain.server.api.progress import PendingProgress
from onnxplain.server.api.status import streaming, unary
from onnxplain.server.api.workers import in_worker, long_work_threads
from onnxplain.server.engine.admission import Turns
from onnxplain.server.engine.cancel import CancelToken
from onnxplain.server.evaluation.metrics import METRICS
from onnxplain.server.handlers.evaluate import evaluate
from onnxplain.server.handlers.explain import explain
from onnxplain.server.handlers.models import describe_model
from onnxplain.server.handlers.predict import predict
from onnxplain.server.handlers.schema import ExplainProgress, ExplainQuery
from onnxplain.server.methods.registry import METHODS
from onnxplain.server.repository.registry import ModelRegistry
from onnxplain.server.settings import ServerSettings
from onnxplain.v1 import explain_service_pb2 as pb
from onnxplain.v1 import explain_service_pb2_grpc as pb_grpc

Result = TypeVar("Result")


class ExplainServicer(pb_grpc.ExplainServiceServicer):
    def __init__(self, registry: ModelRegistry, settings: ServerSettings, executor: Executor) -> None:
        self._registry = registry
        self._settings = settings
        self._executor = executor
        # The server's turns for long work, over every model: fewer than the worker threads.
        self._long_work = Turns(long_work_threads(settings.workers))

    async def _in_worker(self, work: Callable[[CancelToken], Result], turns: tuple[Turns, ...] = ()) -> Result:
        return await in_worker(self._executor, work, turns)

    def _explanation_turns(self, query: ExplainQuery) -> tuple[Turns, ...]:
        """An explanation of many passes waits for its model's turn, then the server's; a single-pass one shares
        batches through the model's scheduler instead. An unknown method or model is the handler's to refuse."""
        method = METHODS.get(query.method)
        if method is None or method.single_pass:
            return ()
        return self._model_turns(query.model, query.version)

    def _model_turns(self, model: str, version: str) -> tuple[Turns, ...]:
        return (self._registry.get(model, version).explanations, self._long_work)

    @unary
    async def Predict(self, request: pb.PredictRequest, context: grpc.aio.ServicerContext) -> pb.PredictResponse:
        query = convert.predict_query(request)
        limits = self._settings.limits
        return await self._in_worker(
            lambda token: convert.predict_response(predict(self._registry, query, limits, token))
        )

    @unary
    async def Explain(self, request: pb.ExplainRequest, context: grpc.aio.ServicerContext) -> pb.ExplainResponse:
        query = convert.explain_query(request)
        return await self._in_worker(
            lambda token: convert.explain_response(explain(self._registry, query, self._settings, token)),
            self._explanation_turns(query),
        )

    @streaming
    async def ExplainStream(
        self, request: pb.ExplainStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExplainStreamResponse]:
        query = convert.explain_query(request.request)
        turns = self._explanation_turns(query)
        pending = PendingProgress(asyncio.get_running_loop())

        def work(token: CancelToken) -> pb.ExplainStreamResponse:
            result = explain(self._registry, query, self._settings, token, pending.report)
            return pb.ExplainStreamResponse(result=convert.explain_response(result))

        work_done = asyncio.ensure_future(self._in_worker(work, turns))
        try:
            while True:
                finished = work_done.done()  # before taking: what it reported before it ended is taken now
                for event in pending.take():
                    for message in await self._progress_messages(event):
                        yield message
                if finished:
                    break
                await pending.wait(work_done)
            yield work_done.result()
        finally:
            work_done.cancel()

    async def _progress_messages(self, event: ExplainProgress) -> list[pb.ExplainStreamResponse]:
        """Partial maps are converted on a worker thread, only those that are sent."""
        if not event.partial:
            return convert.progress_messages(event)
        return await asyncio.get_running_loop().run_in_executor(self._executor, convert.progress_messages, event)

    @unary
    async def Evaluate(self, request: pb.EvaluateRequest, context: grpc.aio.ServicerContext) -> pb.EvaluateResponse:
        query = convert.evaluate_query(request)
        return await self._in_worker(
            lambda token: convert.evaluate_response(evaluate(self._registry, query, self._settings, token)),
            self._model_turns(query.model, query.version),
        )

    @unary
    async def ListMetrics(self, request: pb.ListMetricsRequest, context: Any) -> pb.ListMetricsResponse:
        return pb.ListMetricsResponse(metrics=[convert.metric_info(metric) for metric in METRICS.values()])

    @unary
    async def ListMethods(self, request: pb.ListMethodsRequest, context: Any) -> pb.ListMethodsResponse:
        methods = sorted(METHODS.values(), key=lambda m: m.name)
        return pb.ListMethodsResponse(methods=[convert.method_info(m) for m in methods])

    @unary
    async def ListModels(self, request: pb.ListModelsRequest, context: Any) -> pb.ListModelsResponse:
        return await self._in_worker(lambda _: self._list_models())

    def _list_models(self) -> pb.ListModelsResponse:
        """Rescans the repository (a folder per model): on a worker thread."""
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
