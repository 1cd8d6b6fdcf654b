"""`onnxplain models`: every model version on the server with its state."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from onnxplain.client.cli.common import connect, connection_options, format_statuses


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "models",
        parents=[connection_options()],
        help="list model versions and states",
        description="List every model version in the server's repository.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with connect(args) as client:
        statuses = client.models()
    print(json.dumps([asdict(status) for status in statuses], indent=2) if args.json else format_statuses(statuses))
    return 0
