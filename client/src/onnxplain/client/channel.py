"""Channels both clients share: message limits big enough for maps and images, optional TLS, optional token,
balancing over every address a target resolves to, and retries of idempotent calls that found no server."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeAlias

import grpc

from onnxplain.client.auth import BearerToken, aio_bearer_token
from onnxplain.client.errors import InvalidArgumentError

MAX_MESSAGE_BYTES = 256 * 1024 * 1024
"""gRPC's 4 MiB default is smaller than a batch of input-shaped float32 maps or a few photos."""

DEFAULT_TARGET = "localhost:50051"

SERVICE_NAME = "onnxplain.v1.ExplainService"

LoadBalancing: TypeAlias = Literal["round_robin", "pick_first"]
LOAD_BALANCING_POLICIES: tuple[LoadBalancing, ...] = ("round_robin", "pick_first")

RETRIED_METHODS = ("Predict", "Explain", "Evaluate", "ListMethods", "ListMetrics", "ListModels", "GetModelMetadata")
"""Calls that change nothing on the server, so sending one again costs compute but never a wrong result.
Not ExplainStream (gRPC retries a stream only until its first message arrives, and a half-read stream cannot be
resumed), nor LoadModel, UnloadModel and ReloadModel (a retried admin call may act twice)."""

RETRY_POLICY: dict[str, Any] = {
    "maxAttempts": 5,
    "initialBackoff": "0.1s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    # UNAVAILABLE only: the call reached no server (a replica restarting, draining or gone); every other code is
    # the server's answer and would be the same on a second try.
    "retryableStatusCodes": ["UNAVAILABLE"],
}

ChannelOptions: TypeAlias = Sequence[tuple[str, Any]] | Mapping[str, Any]


def service_config(load_balancing: LoadBalancing = "round_robin", retries: bool = True) -> dict[str, Any]:
    """gRPC's service config: how calls spread over the resolved addresses, and which calls retry on UNAVAILABLE.

    round_robin sends successive calls to successive ready servers of a target such as
    `dns:///onnxplain-headless.ns.svc.cluster.local:50051` or `ipv4:10.0.0.1:50051,10.0.0.2:50051`; pick_first
    (gRPC's own default) keeps every call on one server until its connection breaks.
    """
    if load_balancing not in LOAD_BALANCING_POLICIES:
        # gRPC would accept the channel and then fail every call with an opaque "invalid service config".
        raise InvalidArgumentError(
            f"load_balancing must be one of {', '.join(LOAD_BALANCING_POLICIES)}, not {load_balancing!r}"
        )
    config: dict[str, Any] = {"loadBalancingConfig": [{load_balancing: {}}]}
    if retries:
        names = [{"service": SERVICE_NAME, "method": method} for method in RETRIED_METHODS]
        config["methodConfig"] = [{"name": names, "retryPolicy": RETRY_POLICY}]
    return config


def channel_options(
    extra: ChannelOptions | None = None, *, load_balancing: LoadBalancing = "round_robin", retries: bool = True
) -> list[tuple[str, Any]]:
    """The raised message limits and the service config (balancing, retries), then the caller's options, which
    win on a clash."""
    options: dict[str, Any] = {
        "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
        "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
        "grpc.service_config": json.dumps(service_config(load_balancing, retries)),
    }
    if retries:
        # gRPC only retries a call whose request it still holds: its 256 KiB default would exclude most images.
        options |= {"grpc.enable_retries": 1, "grpc.per_rpc_retry_buffer_size": MAX_MESSAGE_BYTES}
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
