"""The exceptions callers handle: every failure, whether the server refused a call, no server answered, or the
client refused an argument before sending anything, is an OnnxplainError with a gRPC status code and a message."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc


class OnnxplainError(Exception):
    """A call the server (or the transport) refused; `code` says what kind of failure, `message` says why."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgumentError(OnnxplainError, ValueError):
    """The caller's own mistake, INVALID_ARGUMENT: an argument the client refuses before sending anything (a bad
    polarity, an image file that cannot be read, an array of a dtype the wire cannot carry), or a request the server
    refused as invalid. Also a ValueError: the client raised ValueError for most of these before, and a handler
    written for that keeps working."""

    def __init__(self, message: str) -> None:
        super().__init__(grpc.StatusCode.INVALID_ARGUMENT, message)
        self.args = (message,)  # what pickling passes back to __init__


class ServerUnreachableError(OnnxplainError):
    """No server answered at `target`, UNAVAILABLE: nothing listens there, the name does not resolve, or the
    connection failed or broke. The message names the address, which gRPC's own words leave out or mangle."""

    def __init__(self, target: str, reason: str) -> None:
        super().__init__(grpc.StatusCode.UNAVAILABLE, f"no server answered at {target} ({reason})")
        self.target = target
        self.args = (target, reason)  # what pickling passes back to __init__


def from_rpc_error(error: grpc.RpcError, target: str | None = None) -> OnnxplainError:
    """Reads code and details from sync and aio errors alike; a bare RpcError has neither, hence the fallbacks.

    With the channel's `target`, an UNAVAILABLE that no server sent becomes a ServerUnreachableError naming it."""
    code_of = getattr(error, "code", None)
    details_of = getattr(error, "details", None)
    code = code_of() if callable(code_of) else None
    details = details_of() if callable(details_of) else None
    message = details or str(error)
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgumentError(message)
    if code is grpc.StatusCode.UNAVAILABLE and target is not None and not _sent_by_a_server(error):
        return ServerUnreachableError(target, message)
    return OnnxplainError(code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN, message)


def _sent_by_a_server(error: grpc.RpcError) -> bool:
    """An onnxplain server puts x-request-id in the trailing metadata of every answer, errors included (a model
    that is loading or failed to load is UNAVAILABLE too); a status gRPC made up because it reached no server has
    no trailing metadata at all."""
    trailing_of = getattr(error, "trailing_metadata", None)
    return callable(trailing_of) and bool(trailing_of())


@contextmanager
def translating_rpc_errors(target: str | None = None) -> Iterator[None]:
    """Wrap stub calls in this so callers never see grpc.RpcError; works around `await` and async iteration too.

    `target` is the address the channel dials, named in the error when no server answers there."""
    try:
        yield
    except grpc.RpcError as error:
        raise from_rpc_error(error, target) from error
