"""Channel settings both clients share: message limits big enough for maps and images, and optional TLS."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import grpc

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
