"""Domain errors. They carry meaning, not transport codes: api/status.py maps each to a gRPC status."""

from __future__ import annotations


class OnnxplainError(Exception):
    """Base of every error a client can act on; the message is sent to the client as is."""


class InvalidInput(OnnxplainError):
    """The request is malformed: an undecodable image, a tensor of the wrong shape, a bad parameter."""


class NotFound(OnnxplainError):
    """An unknown model, version or method."""


class Unavailable(OnnxplainError):
    """The model exists but cannot serve now (failed to load, loading, unloaded); retrying may help."""


class FailedPrecondition(OnnxplainError):
    """The request is valid but this model cannot satisfy it (e.g. an op without a gradient rule)."""


class UnsupportedGraph(FailedPrecondition):
    """The graph a method needs cannot be built or loaded for this model (an op without a rule, an opset the
    converter cannot raise, a graph ONNX Runtime refuses): the model remembers it for its metadata."""


class ResourceExhausted(OnnxplainError):
    """A configured limit or queue is full."""


class Cancelled(OnnxplainError):
    """The client cancelled the call or its deadline passed while work was running."""


class InternalError(Exception):
    """onnxplain's own failure (a graph it built failed to run, a method returned non-finite maps): not a caller's
    mistake, so not an OnnxplainError. Logged with the request id and its cause, sent as INTERNAL."""
