"""Bearer-token auth for every RPC: callers predict, explain, evaluate and read metadata; admins may also load,
unload and reload models. Health and reflection stay open so probes and grpcurl need no token. A method this module
does not name needs an admin token, so an RPC added later is closed until someone decides otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection

from onnxplain.server.api.tokens import Role, TokenStore
from onnxplain.v1 import explain_service_pb2

EXPLAIN_SERVICE = explain_service_pb2.DESCRIPTOR.services_by_name["ExplainService"].full_name
CALLER_METHODS = frozenset(
    f"/{EXPLAIN_SERVICE}/{name}"
    for name in (
        "Predict",
        "Explain",
        "ExplainStream",
        "Evaluate",
        "ListMethods",
        "ListMetrics",
        "ListModels",
        "GetModelMetadata",
    )
)
# The Open Inference Protocol only infers and reads metadata: every RPC of it is a caller's.
CALLER_SERVICES = frozenset({"inference.GRPCInferenceService"})
OPEN_SERVICES = frozenset({health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME})

log = logging.getLogger("onnxplain.server.auth")

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


def required_role(method: str) -> Role | None:
    """The role a full method name ('/package.Service/Method') needs; None for the open services."""
    service = method.lstrip("/").rpartition("/")[0]
    if service in OPEN_SERVICES:
        return None
    if method in CALLER_METHODS or service in CALLER_SERVICES:
        return "caller"
    return "admin"


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The token of the first `authorization: Bearer <token>` entry (the scheme is case-insensitive, RFC 7235)."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() != "bearer":
                return None
            return token.strip() or None
    return None


class BearerTokenAuth(grpc.aio.ServerInterceptor):
    """Refuses a call before its handler runs: UNAUTHENTICATED without a known token, PERMISSION_DENIED when the
    token's role is too weak. The request is not even deserialized."""

    def __init__(self, tokens: TokenStore) -> None:
        self._tokens = tokens

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        required = required_role(method)
        if handler is None or required is None:
            return handler
        role = self._tokens.role_of(bearer_token(handler_call_details.invocation_metadata))
        if role is None:
            message = "this server needs a valid bearer token: send the metadata 'authorization: Bearer <token>'"
            return _refusal(handler, method, grpc.StatusCode.UNAUTHENTICATED, message)
        if required == "admin" and role != "admin":
            return _refusal(handler, method, grpc.StatusCode.PERMISSION_DENIED, f"{method} needs an admin token")
        return handler


_HANDLER_FACTORIES = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _refusal(handler: grpc.RpcMethodHandler, method: str, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same streaming kind that only aborts; without a deserializer the request stays bytes."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        log.info("refused %s from %s: %s", method, context.peer(), code.name)
        await context.abort(code, message)

    return _HANDLER_FACTORIES[handler.request_streaming, handler.response_streaming](refuse)
