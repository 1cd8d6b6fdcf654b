"""One gRPC call as metrics and logs see it: who asked, for which model and method, and what it cost.

Request and response messages are read by field name, so every service on the port (ours, the Open Inference
Protocol) is described the same way without importing its types.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import grpc

from onnxplain.server.observability.names import shortened

REQUEST_ID_KEY = "x-request-id"
# A client's id is echoed and logged as is only when it is short printable ASCII; anything else is replaced.
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")


@dataclass
class Call:
    request_id: str
    peer: str
    rpc: str
    started: float = field(default_factory=time.perf_counter)
    model: str = ""
    method: str = ""
    images: int = 0
    forward_passes: int = 0
    backward_passes: int = 0
    code: grpc.StatusCode = grpc.StatusCode.OK
    message: str = ""
    duration: float = 0.0

    def describe_request(self, request: Any) -> None:
        """Model, method and image count from a unary request; an ExplainStreamRequest wraps an ExplainRequest."""
        if _has(request, "request"):
            request = request.request
        # Our API and OIP's ModelInfer name the model `model_name`; OIP's ModelReady and ModelMetadata call it `name`.
        field = "model_name" if _has(request, "model_name") else "name"
        self.model = shortened(str(getattr(request, field, "")))
        self.method = shortened(",".join(sorted(set(_methods(request)))))
        self.images = len(request.images) if _has(request, "images") else 0

    def count_passes(self, response: Any) -> None:
        """Passes from a response's Cost (a stream's final result holds it); a prediction is one forward pass, and
        so is each row of an Open Inference Protocol batch (its outputs' first dimension)."""
        if _has(response, "result"):
            response = response.result
        if _has(response, "cost"):
            self.forward_passes += response.cost.forward_passes
            self.backward_passes += response.cost.backward_passes
        elif _has(response, "predictions"):
            self.forward_passes += len(response.predictions)
        elif _has(response, "raw_output_contents") and response.outputs and response.outputs[0].shape:
            # ModelInferResponse only: metadata responses list outputs too, with -1 for the batch dimension.
            self.forward_passes += response.outputs[0].shape[0]

    def finish(self, code: grpc.StatusCode, message: str) -> None:
        self.code, self.message = code, message
        self.duration = time.perf_counter() - self.started


# The call the current task serves: lets work submitted from the handler (queue timing) and log lines written
# while it runs name their request without being handed it.
current_call: ContextVar[Call | None] = ContextVar("onnxplain_call", default=None)


def request_id(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    """The caller's x-request-id when it is usable, else a fresh one, so every log line can be traced."""
    sent = next((value for key, value in metadata or () if key == REQUEST_ID_KEY), None)
    if isinstance(sent, str) and _REQUEST_ID.fullmatch(sent):
        return sent
    return uuid.uuid4().hex


def rpc_name(full_method: str) -> str:
    """'/onnxplain.v1.ExplainService/Predict' -> 'Predict'."""
    return full_method.rsplit("/", 1)[-1]


def _methods(request: Any) -> list[str]:
    if _has(request, "method"):
        return [request.method] if request.method else []
    if _has(request, "explainers"):
        return [explainer.method for explainer in request.explainers if explainer.method]
    return []


def _has(message: Any, name: str) -> bool:
    """Whether a protobuf message declares the field (set or not); message fields must also be set."""
    descriptor = getattr(message, "DESCRIPTOR", None)
    field_descriptor = descriptor.fields_by_name.get(name) if descriptor is not None else None
    if field_descriptor is None:
        return False
    if field_descriptor.message_type is not None and not field_descriptor.is_repeated:
        return message.HasField(name)
    return True
