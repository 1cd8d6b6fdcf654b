"""The outermost server interceptor: every call, refused ones included, is timed, counted and logged once.

It wraps the handler's behaviour instead of the handler, because only the behaviour sees the request message
(model, method) and the responses (passes), and only it ends with the final status. Streamed responses pass
through one by one as they are produced. Health checks and reflection are probes, not requests: left alone.
A unary request whose bytes are not the RPC's message reaches the behaviour as an UndecodableRequest, and the call is
answered INVALID_ARGUMENT, logged and counted, where gRPC alone would answer a bare UNKNOWN.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing, contextmanager
from typing import Any

import grpc

from onnxplain.server.observability import metrics
from onnxplain.server.observability.call import REQUEST_ID_KEY, Call, current_call, request_id, rpc_name
from onnxplain.server.observability.logs import log_call

UNOBSERVED_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
_WRAP = {
    (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
    (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
    (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
}


class UndecodableRequest:
    """What a unary request's bytes decoded to when they are not the RPC's message."""

    def __init__(self, problem: str) -> None:
        self.problem = problem


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None or details.method.startswith(UNOBSERVED_SERVICES):
            return handler
        attribute, make_handler = _WRAP[(handler.request_streaming, handler.response_streaming)]
        behaviour = getattr(handler, attribute)
        rpc, call_id = rpc_name(details.method), request_id(details.invocation_metadata)
        # A streaming behaviour is an async generator, or a coroutine that writes through the context.
        wrap = _observe_stream if inspect.isasyncgenfunction(behaviour) else _observe_unary
        unary_request = not handler.request_streaming
        deserializer = handler.request_deserializer
        return make_handler(
            wrap(behaviour, rpc, call_id, unary_request=unary_request),
            request_deserializer=_tolerant(deserializer) if unary_request and deserializer else deserializer,
            response_serializer=handler.response_serializer,
        )


def _tolerant(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as error:  # protobuf's DecodeError, or whatever a custom deserializer raises
            return UndecodableRequest(f"{type(error).__name__}: {error}")

    return decode


async def _refuse_undecodable(request: Any, context: grpc.aio.ServicerContext) -> None:
    if isinstance(request, UndecodableRequest):
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid message for this RPC ({request.problem})"
        )


def _observe_unary(behaviour: Callable[..., Awaitable[Any]], rpc: str, call_id: str, unary_request: bool) -> Any:
    async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
        call = _begin(request if unary_request else None, context, rpc, call_id)
        with _observing(call, context):
            await _refuse_undecodable(request, context)
            response = await behaviour(request, context)
            call.count_passes(response)
            return response

    return observed


def _observe_stream(behaviour: Callable[..., AsyncIterator[Any]], rpc: str, call_id: str, unary_request: bool) -> Any:
    async def observed(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        call = _begin(request if unary_request else None, context, rpc, call_id)
        with _observing(call, context):
            await _refuse_undecodable(request, context)
            async with aclosing(behaviour(request, context)) as responses:
                async for response in responses:
                    call.count_passes(response)
                    yield response

    return observed


def _begin(request: Any, context: grpc.aio.ServicerContext, rpc: str, call_id: str) -> Call:
    call = Call(request_id=call_id, peer=context.peer(), rpc=rpc)
    if request is not None:
        call.describe_request(request)
    # The handler's task is this call's alone: setting the variable here scopes it to this call.
    current_call.set(call)
    # Trailing metadata reaches the client on success and on error alike; an abort keeps what was set here.
    context.set_trailing_metadata(((REQUEST_ID_KEY, call_id),))
    return call


@contextmanager
def _observing(call: Call, context: grpc.aio.ServicerContext) -> Iterator[None]:
    with metrics.tracked(call):
        try:
            yield
        except BaseException as error:
            call.finish(*_status(error, context))
            raise
        else:
            call.finish(context.code() or grpc.StatusCode.OK, context.details() or "")
        finally:
            log_call(call)


def _status(error: BaseException, context: grpc.aio.ServicerContext) -> tuple[grpc.StatusCode, str]:
    """The status the client gets for a call that ended with this exception."""
    if isinstance(error, grpc.aio.AbortError):
        return context.code() or grpc.StatusCode.UNKNOWN, context.details() or ""
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded"
        return grpc.StatusCode.CANCELLED, "cancelled by the client"
    # grpc answers an exception that escapes a handler with UNKNOWN.
    return grpc.StatusCode.UNKNOWN, f"{type(error).__name__}: {error}"
