"""Errors that reach the transport: onnxplain's own kinds keep their codes, running out of memory is
RESOURCE_EXHAUSTED, anything else INTERNAL with the request id."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from onnxplain.server import errors
from onnxplain.server.api.status import abort_for
from onnxplain.server.observability.call import Call, current_call


class Aborted(Exception):
    pass


class RecordingContext:
    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise Aborted


def aborted_with(error: Exception) -> RecordingContext:
    context = RecordingContext()

    async def run() -> None:
        with pytest.raises(Aborted):
            await abort_for(error, context)

    asyncio.run(run())
    return context


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidInput("bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.ResourceExhausted("full"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.UnsupportedGraph("no rule"), grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
def test_onnxplain_errors_keep_their_code_and_message(error: Exception, code: grpc.StatusCode) -> None:
    context = aborted_with(error)
    assert (context.code, context.details) == (code, str(error))


def test_out_of_memory_is_resource_exhausted_with_the_request_id(caplog: pytest.LogCaptureFixture) -> None:
    call = Call(request_id="req-42", peer="ipv4:127.0.0.1:1", rpc="Explain")
    token = current_call.set(call)
    try:
        context = aborted_with(MemoryError("Unable to allocate 200. GiB"))
    finally:
        current_call.reset(token)
    assert context.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "request id req-42" in context.details
    assert any("req-42" in record.getMessage() and "200. GiB" in record.getMessage() for record in caplog.records)


def test_anything_else_is_internal_and_logged_with_its_cause(caplog: pytest.LogCaptureFixture) -> None:
    context = aborted_with(ZeroDivisionError("division by zero"))
    assert context.code is grpc.StatusCode.INTERNAL
    assert "ZeroDivisionError" in context.details
    assert any("division by zero" in record.getMessage() for record in caplog.records)
