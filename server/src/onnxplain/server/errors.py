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


class ResourceExhausted(OnnxplainError):
    """A configured limit or queue is full."""


class Cancelled(OnnxplainError):
    """The client cancelled the call or its deadline passed while work was running."""
