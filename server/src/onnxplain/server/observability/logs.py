"""Server logs: one line per finished call, as JSON for log pipelines or as text for people.

Only the fields below are logged: never request metadata beyond x-request-id, so tokens cannot leak into logs.
Names come from callers and from the repository's folders and files, so neither may shape the log: they are cut to
a bounded length (shortened) and, in the text format, control characters are escaped so a name holding a newline
cannot start a record of its own.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone
from types import TracebackType
from typing import Literal

import grpc

from onnxplain.server.observability.call import Call, current_call
from onnxplain.server.observability.names import shortened

LogFormat = Literal["json", "text"]
LOG_FORMATS: tuple[LogFormat, ...] = ("json", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Codes that mean the server failed, not the client: logged as errors.
SERVER_FAULTS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}

# A call's error message in its log record keeps this many (it may quote a caller's values).
MAX_LOGGED_MESSAGE = 2000
# C0 and C1 control characters (newline, carriage return, escape, NEL) and the Unicode line and paragraph separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

requests_log = logging.getLogger("onnxplain.requests")


def escape_controls(text: str) -> str:
    """Control characters as Python escapes ('\\n', '\\x1b', '\\u2028'): the text stays on one line."""
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601 UTC), level, logger, then a call's fields or the message."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        fields = getattr(record, "call", None)
        if fields is not None:
            line.update(fields)
        else:
            call = current_call.get()
            if call is not None:
                line["request_id"] = call.request_id
            line["message"] = record.getMessage()
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT, one line per record: the message's control characters are escaped; a traceback follows on lines
    indented by two spaces (its own control characters escaped too), so no line of it can pass for a record."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatException(self, exc_info: tuple[type[BaseException], BaseException, TracebackType | None]) -> str:
        return _indented(super().formatException(exc_info))

    def formatStack(self, stack_info: str) -> str:
        return _indented(super().formatStack(stack_info))


def _indented(text: str) -> str:
    return "\n".join("  " + escape_controls(line) for line in text.split("\n"))


def configure_logging(level: str, log_format: LogFormat) -> None:
    """Every log record to stderr, in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def log_call(call: Call) -> None:
    fields = {
        "request_id": call.request_id,
        "peer": call.peer,
        "rpc": call.rpc,
        "model": call.model,
        "method": call.method,
        "code": call.code.name,
        "duration_ms": round(call.duration * 1000, 3),
        "forward_passes": call.forward_passes,
        "backward_passes": call.backward_passes,
        "images": call.images,
        "message": shortened(call.message, MAX_LOGGED_MESSAGE),
    }
    level = logging.ERROR if call.code in SERVER_FAULTS else logging.INFO
    summary = " ".join(f"{key}={value}" for key, value in fields.items() if key != "message")
    if fields["message"]:
        summary += f" message={fields['message']!r}"
    requests_log.log(level, summary, extra={"call": fields})
