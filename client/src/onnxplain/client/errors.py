"""The one exception type callers handle: every gRPC failure becomes an OnnxplainError with the server's message."""

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


def from_rpc_error(error: grpc.RpcError) -> OnnxplainError:
    """Reads code and details from sync and aio errors alike; a bare RpcError has neither, hence the fallbacks."""
    code_of = getattr(error, "code", None)
    details_of = getattr(error, "details", None)
    code = code_of() if callable(code_of) else None
    details = details_of() if callable(details_of) else None
    return OnnxplainError(code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN, details or str(error))


@contextmanager
def translating_rpc_errors() -> Iterator[None]:
    """Wrap stub calls in this so callers never see grpc.RpcError; works around `await` and async iteration too."""
    try:
        yield
    except grpc.RpcError as error:
        raise from_rpc_error(error) from error
