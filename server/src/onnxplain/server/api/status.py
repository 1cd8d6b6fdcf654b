"""Domain errors -> gRPC status codes, in one place for every RPC (unary and streaming)."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from onnxplain.server import errors
from onnxplain.server.observability.call import current_call

log = logging.getLogger("onnxplain.server")

STATUS_CODES: dict[type[errors.OnnxplainError], grpc.StatusCode] = {
    errors.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Cancelled: grpc.StatusCode.CANCELLED,
}

Response = TypeVar("Response")


def status_code(error: errors.OnnxplainError) -> grpc.StatusCode:
    return next(code for kind, code in STATUS_CODES.items() if isinstance(error, kind))


async def abort_for(error: Exception, context: grpc.aio.ServicerContext) -> None:
    """Abort the call with the status the error means; anything unexpected is logged and sent as INTERNAL."""
    if isinstance(error, errors.OnnxplainError):
        await context.abort(status_code(error), str(error))
    call = current_call.get()
    request = f", request id {call.request_id}" if call is not None else ""
    if isinstance(error, MemoryError):
        # numpy or Python could not allocate: the request asked for more memory than the server has free now.
        log.warning("out of memory in a request%s: %s", request, error)
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"the server ran out of memory for this request{request}: try fewer images or targets, or smaller "
            "parameters",
        )
    log.exception("unexpected error in %s: %s", type(error).__name__, error, exc_info=error)
    await context.abort(
        grpc.StatusCode.INTERNAL, f"internal error ({type(error).__name__}{request}); the server log has the cause"
    )


def unary(handler: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Response:
        try:
            return await handler(self, request, context)
        except Exception as error:
            if isinstance(error, grpc.aio.AbortError):
                raise
            await abort_for(error, context)
            raise  # unreachable: abort raises

    return wrapper


def streaming(handler: Callable[..., AsyncIterator[Response]]) -> Callable[..., AsyncIterator[Response]]:
    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Response]:
        try:
            async for response in handler(self, request, context):
                yield response
        except Exception as error:
            if isinstance(error, grpc.aio.AbortError):
                raise
            await abort_for(error, context)

    return wrapper
