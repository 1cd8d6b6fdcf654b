#!/usr/bin/env python3
"""Exit 0 when the onnxplain server answers grpc.health.v1 SERVING, 1 otherwise (loading, draining, unreachable).

Installed in the images as `onnxplain-healthcheck`, for Docker's HEALTHCHECK and for Kubernetes exec probes where
the kubelet's own gRPC probe cannot be used: that probe speaks plain text only, so a server started with --tls-cert
needs this check with --ca-file (and --cert-file/--key-file under mutual TLS). The health service needs no token.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="onnxplain-healthcheck", description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1:50051", help="the server's gRPC address")
    parser.add_argument("--service", default="", help='health service name ("": the whole server)')
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    parser.add_argument("--ca-file", type=Path, help="root certificates: check over TLS")
    parser.add_argument("--cert-file", type=Path, help="client certificate chain, for mutual TLS")
    parser.add_argument("--key-file", type=Path, help="client private key, for mutual TLS")
    parser.add_argument("--server-name", help="a DNS name in the server's certificate, if it does not cover --address")
    return parser.parse_args(argv)


def open_channel(arguments: argparse.Namespace) -> grpc.Channel:
    if arguments.ca_file is None:
        return grpc.insecure_channel(arguments.address)
    credentials = grpc.ssl_channel_credentials(
        arguments.ca_file.read_bytes(),
        arguments.key_file.read_bytes() if arguments.key_file else None,
        arguments.cert_file.read_bytes() if arguments.cert_file else None,
    )
    options = [("grpc.ssl_target_name_override", arguments.server_name)] if arguments.server_name else []
    return grpc.secure_channel(arguments.address, credentials, options=options)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    with open_channel(arguments) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=arguments.service), timeout=arguments.timeout
            )
        except grpc.RpcError as error:
            print(f"unhealthy: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(status)
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
