"""`onnxplain metadata`: one model version's inputs, labels, preprocessing and supported methods, as JSON."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from onnxplain.client.cli.common import add_model_options, connect, connection_options


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "metadata",
        parents=[connection_options()],
        help="show a model's metadata (JSON)",
        description="Print a model version's metadata as JSON.",
    )
    add_model_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with connect(args) as client:
        metadata = client.metadata(args.model, args.version)
    print(json.dumps(asdict(metadata), indent=2))
    return 0
