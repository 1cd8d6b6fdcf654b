"""A bearer token on every call: the metadata `authorization: Bearer <token>` that onnxplain servers check.

Interceptors rather than gRPC call credentials, because call credentials refuse plain-text channels, and a token over
a trusted network or to a TLS-terminating proxy is common. Over any other network, use TLS so the token stays secret.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import grpc

from onnxplain.client.errors import InvalidArgumentError

Metadata = tuple[tuple[str, str], ...]


def authorization_metadata(token: str) -> tuple[str, str]:
    """The metadata entry carrying the token; a malformed token is refused here, never quoted."""
    if not token or not all("!" <= character <= "~" for character in token):
        raise InvalidArgumentError("a token must be a non-empty string of visible ASCII characters without spaces")
    return "authorization", f"Bearer {token}"


def _with_entry(metadata: Sequence[tuple[str, Any]] | None, entry: tuple[str, str]) -> Metadata:
    return (*tuple(metadata or ()), entry)


class _CallDetails(NamedTuple):
    """grpc.ClientCallDetails for the blocking client, which offers no way to copy one with new metadata."""

    method: str
    timeout: float | None
    metadata: Metadata
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """For grpc.intercept_channel (blocking client)."""

    def __init__(self, token: str) -> None:
        self._entry = authorization_metadata(token)

    def intercept_unary_unary(self, continuation: Callable, client_call_details: Any, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation: Callable, client_call_details: Any, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)

    def _details(self, details: Any) -> _CallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            _with_entry(details.metadata, self._entry),
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )


def aio_bearer_token(token: str) -> list[grpc.aio.ClientInterceptor]:
    """For grpc.aio channels, which take one interceptor object per call kind."""
    entry = authorization_metadata(token)
    return [_AioUnaryUnaryToken(entry), _AioUnaryStreamToken(entry)]


def _aio_details(details: grpc.aio.ClientCallDetails, entry: tuple[str, str]) -> grpc.aio.ClientCallDetails:
    return details._replace(metadata=grpc.aio.Metadata(*_with_entry(details.metadata, entry)))


class _AioUnaryUnaryToken(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, entry: tuple[str, str]) -> None:
        self._entry = entry

    async def intercept_unary_unary(self, continuation: Callable, client_call_details: Any, request: Any) -> Any:
        return await continuation(_aio_details(client_call_details, self._entry), request)


class _AioUnaryStreamToken(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, entry: tuple[str, str]) -> None:
        self._entry = entry

    async def intercept_unary_stream(self, continuation: Callable, client_call_details: Any, request: Any) -> Any:
        return await continuation(_aio_details(client_call_details, self._entry), request)
