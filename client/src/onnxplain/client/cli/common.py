"""What the client commands share: connection options, the model options, and plain-text tables."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from onnxplain.client.catalog import ModelStatus
from onnxplain.client.channel import DEFAULT_TARGET, LOAD_BALANCING_POLICIES
from onnxplain.client.sync import Client

SERVER_ENVIRONMENT_VARIABLE = "ONNXPLAIN_SERVER"
# The environment keeps the token out of the process list, where a --token argument shows.
TOKEN_ENVIRONMENT_VARIABLE = "ONNXPLAIN_TOKEN"

SERVER_HINT = (
    "is a server running there? Start one with `make serve` in a checkout, or `onnxplain serve [--model-repository "
    f"DIR] [--port PORT]`; or point at a running one with --server HOST:PORT or ${SERVER_ENVIRONMENT_VARIABLE}"
)
"""What to do when no server answered at the address a command dialled."""


def connection_options() -> argparse.ArgumentParser:
    """A parent parser (argparse `parents=`) so every client command takes the same connection flags."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument(
        "--server",
        metavar="HOST:PORT",
        default=os.environ.get(SERVER_ENVIRONMENT_VARIABLE) or DEFAULT_TARGET,
        help=f"server address (default: ${SERVER_ENVIRONMENT_VARIABLE} or {DEFAULT_TARGET})",
    )
    group.add_argument("--timeout", type=positive_float, metavar="SECONDS", help="deadline of each call")
    group.add_argument("--ca-file", type=Path, metavar="PEM", help="root certificates: connect with TLS")
    group.add_argument("--cert-file", type=Path, metavar="PEM", help="client certificate chain for mutual TLS")
    group.add_argument("--key-file", type=Path, metavar="PEM", help="client private key for mutual TLS")
    group.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENVIRONMENT_VARIABLE) or None,
        help=f"bearer token sent with every call (default: ${TOKEN_ENVIRONMENT_VARIABLE}, which is safer)",
    )
    group.add_argument(
        "--load-balancing",
        choices=LOAD_BALANCING_POLICIES,
        default="round_robin",
        help="round_robin: spread calls over every server the address resolves to, e.g. "
        "dns:///onnxplain-headless.NAMESPACE.svc.cluster.local:50051; pick_first: one server",
    )
    group.add_argument(
        "--no-retries",
        dest="retries",
        action="store_false",
        help="do not retry idempotent calls that found no server (UNAVAILABLE) on another one",
    )
    return parent


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="NAME", help="model name")
    parser.add_argument("--version", default="", metavar="V", help="model version (default: the latest ready one)")


def add_output_option(parser: argparse.ArgumentParser, verb: str) -> None:
    """--output NAME: the head a multi-head model's request is about."""
    parser.add_argument(
        "--output",
        default="",
        metavar="NAME",
        help=f"the output (head) to {verb} on a model with several; `onnxplain metadata` lists them as heads "
        "(default: the model's default head)",
    )


def connect(args: argparse.Namespace) -> Client:
    return Client(
        args.server,
        timeout=args.timeout,
        root_certificates=_read(args.ca_file),
        certificate_chain=_read(args.cert_file),
        private_key=_read(args.key_file),
        token=args.token,
        load_balancing=args.load_balancing,
        retries=args.retries,
    )


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns two spaces apart, trailing spaces trimmed."""
    cells = [[str(cell) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in cells)
    return "\n".join(line.rstrip() for line in lines)


def format_statuses(statuses: Sequence[ModelStatus]) -> str:
    rows = [(status.name, status.version, status.state, status.reason) for status in statuses]
    return format_table(("NAME", "VERSION", "STATE", "REASON"), rows)


def _read(path: Path | None) -> bytes | None:
    return None if path is None else path.read_bytes()
