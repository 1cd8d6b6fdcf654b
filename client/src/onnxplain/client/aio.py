"""asyncio client: the same thin wrapper as Client, awaiting the shared Calls on a grpc.aio channel."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any, TypeVar, overload

from onnxplain.client import calls
from onnxplain.client.calls import (
    AttributionShapeName,
    Call,
    EvaluateArgs,
    ExplainArgs,
    PolarityName,
    ScoreSpaceName,
)
from onnxplain.client.catalog import MethodInfo, MetricInfo, ModelMetadata, ModelStatus
from onnxplain.client.channel import (
    DEFAULT_TARGET,
    ChannelOptions,
    LoadBalancing,
    channel_credentials,
    channel_options,
    open_aio_channel,
)
from onnxplain.client.errors import translating_rpc_errors
from onnxplain.client.evaluation import ExplainersLike, RegionsLike
from onnxplain.client.images import ImageLike, ImagesLike, SegmentMap, SegmentMaps, SegmentsLike
from onnxplain.client.parameters import ParameterValue
from onnxplain.client.responses import StreamEvent
from onnxplain.client.results import Evaluation, Explanation, Prediction
from onnxplain.client.targets import TargetsLike
from onnxplain.v1.explain_service_pb2_grpc import ExplainServiceStub

R = TypeVar("R")


class AsyncClient:
    """asyncio onnxplain client (`async with AsyncClient(...) as client`). Every failure raises OnnxplainError:
    InvalidArgumentError (also a ValueError) for the caller's own mistakes, whether the client or the server caught
    them, and ServerUnreachableError, naming the address, when no server answers.

    One image in gives one result back; a list or tuple of images gives a list. `timeout` (seconds) is the default
    deadline of every call; each method's own `timeout` overrides it. Insecure unless certificates are given;
    `token` is sent as `authorization: Bearer <token>` on every call (use TLS beyond a trusted network).

    A target naming several servers (`dns:///onnxplain-headless.ns.svc.cluster.local:50051`,
    `ipv4:10.0.0.1:50051,10.0.0.2:50051`) gets its calls spread over them (`load_balancing="round_robin"`;
    "pick_first" keeps one server). Idempotent calls that find no server (UNAVAILABLE: a replica restarting,
    draining or gone) are retried up to 4 times with exponential backoff, on another server when there is one;
    `retries=False` turns that off. See onnxplain.client.channel.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float | None = None,
        options: ChannelOptions | None = None,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
        token: str | None = None,
        load_balancing: LoadBalancing = "round_robin",
        retries: bool = True,
    ) -> None:
        self.target = target
        self.timeout = timeout
        credentials = channel_credentials(root_certificates, private_key, certificate_chain)
        options = channel_options(options, load_balancing=load_balancing, retries=retries)
        self._channel = open_aio_channel(target, options, credentials, token)
        self._stub = ExplainServiceStub(self._channel)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    @overload
    async def predict(
        self,
        model: str,
        images: ImageLike,
        *,
        version: str = ...,
        top_k: int = ...,
        output: str = ...,
        timeout: float | None = ...,
    ) -> Prediction: ...
    @overload
    async def predict(
        self,
        model: str,
        images: list[ImageLike] | tuple[ImageLike, ...],
        *,
        version: str = ...,
        top_k: int = ...,
        output: str = ...,
        timeout: float | None = ...,
    ) -> list[Prediction]: ...
    async def predict(
        self,
        model: str,
        images: ImagesLike,
        *,
        version: str = "",
        top_k: int = 5,
        output: str = "",
        timeout: float | None = None,
    ) -> Prediction | list[Prediction]:
        """Model scores and the top_k classes of each image; version "" is the latest ready one. `output` names the
        head to score on a model with several (`metadata().heads`); "" is the model's default."""
        return await self._call(calls.predict(model, images, version=version, top_k=top_k, output=output), timeout)

    @overload
    async def explain(
        self,
        model: str,
        images: ImageLike,
        *,
        method: str = ...,
        target: TargetsLike = ...,
        version: str = ...,
        attribution_shape: AttributionShapeName = ...,
        score_space: ScoreSpaceName = ...,
        overlay: bool = ...,
        colormap: str | None = ...,
        polarity: PolarityName | None = ...,
        segments: SegmentMap | None = ...,
        original_maps: bool = ...,
        output: str = ...,
        timeout: float | None = ...,
        **params: ParameterValue,
    ) -> Explanation: ...
    @overload
    async def explain(
        self,
        model: str,
        images: list[ImageLike] | tuple[ImageLike, ...],
        *,
        method: str = ...,
        target: TargetsLike = ...,
        version: str = ...,
        attribution_shape: AttributionShapeName = ...,
        score_space: ScoreSpaceName = ...,
        overlay: bool = ...,
        colormap: str | None = ...,
        polarity: PolarityName | None = ...,
        segments: SegmentMaps | None = ...,
        original_maps: bool = ...,
        output: str = ...,
        timeout: float | None = ...,
        **params: ParameterValue,
    ) -> list[Explanation]: ...
    async def explain(
        self,
        model: str,
        images: ImagesLike,
        *,
        method: str = "occlusion",
        target: TargetsLike = None,
        version: str = "",
        attribution_shape: AttributionShapeName = "spatial",
        score_space: ScoreSpaceName = "raw",
        overlay: bool = False,
        colormap: str | None = None,
        polarity: PolarityName | None = None,
        segments: SegmentsLike = None,
        original_maps: bool = False,
        output: str = "",
        timeout: float | None = None,
        **params: ParameterValue,
    ) -> Explanation | list[Explanation]:
        """Attribution maps; `**params` are the method's parameters (see `methods()`), e.g. window=(8, 8).

        `segments`: an (H, W) integer array of segment ids at model-input resolution (a list, one per image, for
        several images) that lime, kernel_shap and feature_ablation use instead of their own superpixels.
        `original_maps`: also return the maps over the whole original image (`Explanation.original_attribution`).
        `output`: the head to explain on a model with several (`metadata().heads`), e.g. one digit of a captcha
        reader; targets, scores and maps are then that head's. "" is the model's default head.
        """
        args = ExplainArgs(
            model=model,
            images=images,
            method=method,
            target=target,
            version=version,
            attribution_shape=attribution_shape,
            score_space=score_space,
            overlay=overlay,
            colormap=colormap,
            polarity=polarity,
            params=params,
            segments=segments,
            original_maps=original_maps,
            output=output,
        )
        return await self._call(calls.explain(args), timeout)

    def explain_stream(
        self,
        model: str,
        images: ImagesLike,
        *,
        method: str = "occlusion",
        target: TargetsLike = None,
        version: str = "",
        attribution_shape: AttributionShapeName = "spatial",
        score_space: ScoreSpaceName = "raw",
        overlay: bool = False,
        colormap: str | None = None,
        polarity: PolarityName | None = None,
        segments: SegmentsLike = None,
        original_maps: bool = False,
        output: str = "",
        timeout: float | None = None,
        **params: ParameterValue,
    ) -> AsyncIterator[StreamEvent]:
        """Like explain, yielding Progress and PartialMap events, then the result shaped as explain returns it.

        Leaving the loop early cancels the call on the server.
        """
        args = ExplainArgs(
            model=model,
            images=images,
            method=method,
            target=target,
            version=version,
            attribution_shape=attribution_shape,
            score_space=score_space,
            overlay=overlay,
            colormap=colormap,
            polarity=polarity,
            params=params,
            segments=segments,
            original_maps=original_maps,
            output=output,
        )
        return self._stream(calls.explain_stream(args), timeout)

    async def evaluate(
        self,
        model: str,
        images: ImagesLike,
        *,
        methods: ExplainersLike = ("rise",),
        metrics: Sequence[str] = (),
        target: TargetsLike = None,
        version: str = "",
        score_space: ScoreSpaceName | None = None,
        regions: RegionsLike = None,
        output: str = "",
        timeout: float | None = None,
        **params: ParameterValue,
    ) -> Evaluation:
        """Score explainers on the same images: `methods` are method names or MethodSpec (a method with its
        parameters, or maps you already have); `metrics` are names from `metrics()` (empty: deletion, insertion,
        faithfulness_correlation, infidelity, and the localisation metrics when `regions` are given); `**params`
        are metric parameters, e.g. step=224. `regions` is a Region (one image) or a list with one per image.
        score_space None keeps each metric's published convention. `output` names the head of a multi-head model."""
        args = EvaluateArgs(model, images, methods, metrics, target, version, score_space, regions, params, output)
        return await self._call(calls.evaluate(args), timeout)

    async def metrics(self, *, timeout: float | None = None) -> list[MetricInfo]:
        """The metrics evaluate() computes, with their parameters."""
        return await self._call(calls.list_metrics(), timeout)

    async def methods(self, *, timeout: float | None = None) -> list[MethodInfo]:
        return await self._call(calls.list_methods(), timeout)

    async def models(self, *, timeout: float | None = None) -> list[ModelStatus]:
        return await self._call(calls.list_models(), timeout)

    async def metadata(self, model: str, version: str = "", *, timeout: float | None = None) -> ModelMetadata:
        return await self._call(calls.model_metadata(model, version), timeout)

    async def load(self, model: str, version: str = "", *, timeout: float | None = None) -> ModelStatus:
        """Loads a version ("" = latest) and returns its state once loaded or failed."""
        return await self._call(calls.load_model(model, version), timeout)

    async def unload(self, model: str, version: str = "", *, timeout: float | None = None) -> list[ModelStatus]:
        """Unloads a version ("" = every version)."""
        return await self._call(calls.unload_model(model, version), timeout)

    async def reload(self, model: str, version: str = "", *, timeout: float | None = None) -> ModelStatus:
        """Re-reads a model from the repository; the old session serves until the new one is ready."""
        return await self._call(calls.reload_model(model, version), timeout)

    async def _call(self, call: Call[R], timeout: float | None) -> R:
        with translating_rpc_errors(self.target):
            response = await self._rpc(call.rpc)(call.request, timeout=self._deadline(timeout))
        return call.parse(response)

    async def _stream(self, call: Call[StreamEvent | None], timeout: float | None) -> AsyncIterator[StreamEvent]:
        responses = self._rpc(call.rpc)(call.request, timeout=self._deadline(timeout))
        try:
            with translating_rpc_errors(self.target):
                async for response in responses:
                    event = call.parse(response)
                    if event is not None:
                        yield event
        finally:
            responses.cancel()

    def _rpc(self, name: str) -> Any:
        return getattr(self._stub, name)

    def _deadline(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout
