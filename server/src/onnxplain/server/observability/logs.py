"""Server logs: one line per finished call, as JSON for log pipelines or as text for people.

Only the fields below are logged: never request metadata beyond x-request-id, so tokens cannot leak into logs.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Literal

import grpc

from onnxplain.server.observability.call import Call, current_call

LogFormat = Literal["json", "text"]
LOG_FORMATS: tuple[LogFormat, ...] = ("json", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Codes that mean the server failed, not the client: logged as errors.
SERVER_FAULTS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}

requests_log = logging.getLogger("onnxplain.requests")


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


def configure_logging(level: str, log_format: LogFormat) -> None:
    """Every log record to stderr, in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
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
        "message": call.message,
    }
    level = logging.ERROR if call.code in SERVER_FAULTS else logging.INFO
    summary = " ".join(f"{key}={value}" for key, value in fields.items() if key != "message")
    if call.message:
        summary += f" message={call.message!r}"
    requests_log.log(level, summary, extra={"call": fields})
