"""Channels both clients share: message limits big enough for maps and images, optional TLS, optional token."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import grpc

from onnxplain.client.auth import BearerToken, aio_bearer_token

MAX_MESSAGE_BYTES = 256 * 1024 * 1024
"""gRPC's 4 MiB default is smaller than a batch of input-shaped float32 maps or a few photos."""

DEFAULT_TARGET = "localhost:50051"

ChannelOptions: TypeAlias = Sequence[tuple[str, Any]] | Mapping[str, Any]


def channel_options(extra: ChannelOptions | None = None) -> list[tuple[str, Any]]:
    """The raised message limits, then the caller's options, which win on a clash."""
    options: dict[str, Any] = {
        "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
        "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
    }
    options.update(extra.items() if isinstance(extra, Mapping) else (extra or ()))
    return list(options.items())


def channel_credentials(
    root_certificates: bytes | None = None,
    private_key: bytes | None = None,
    certificate_chain: bytes | None = None,
) -> grpc.ChannelCredentials | None:
    """TLS as soon as any certificate material is given (a client key alone means mutual TLS with system roots)."""
    if root_certificates is None and private_key is None and certificate_chain is None:
        return None
    return grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)


def open_channel(
    target: str, options: list[tuple[str, Any]], credentials: grpc.ChannelCredentials | None, token: str | None
) -> grpc.Channel:
    """A blocking channel: TLS with credentials, plain text without; every call carries the token when one is given."""
    if credentials is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        channel = grpc.secure_channel(target, credentials, options=options)
    return channel if token is None else grpc.intercept_channel(channel, BearerToken(token))


def open_aio_channel(
    target: str, options: list[tuple[str, Any]], credentials: grpc.ChannelCredentials | None, token: str | None
) -> grpc.aio.Channel:
    """The asyncio twin of open_channel."""
    interceptors = None if token is None else aio_bearer_token(token)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)
