"""`onnxplain methods`: the attribution methods the server knows and their parameters (what --param accepts)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from onnxplain.client.catalog import MethodInfo
from onnxplain.client.cli.common import connect, connection_options, format_table


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "methods",
        parents=[connection_options()],
        help="list attribution methods",
        description="List the attribution methods the server knows, with parameters.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with connect(args) as client:
        methods = client.methods()
    print(json.dumps([asdict(method) for method in methods], indent=2) if args.json else format_methods(methods))
    return 0


def format_methods(methods: list[MethodInfo]) -> str:
    """One block per method: name, family and description, then its parameters indented."""
    blocks = []
    for method in methods:
        title = f"{method.name} ({method.family})"
        lines = [f"{title}: {method.description}" if method.description else title]
        rows = [
            (f"  {spec.name}", spec.type, f"= {spec.default}" if spec.default else "", spec.description)
            for spec in method.parameters
        ]
        if rows:
            lines.append(format_table(("  PARAMETER", "TYPE", "DEFAULT", "DESCRIPTION"), rows))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
