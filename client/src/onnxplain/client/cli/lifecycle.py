"""`onnxplain load|unload|reload`: manage which model versions the server holds in memory."""

from __future__ import annotations

import argparse
from typing import Any

from onnxplain.client.cli.common import add_model_options, connect, connection_options, format_statuses

_HELP = {
    "load": "load a model version (default: the latest)",
    "unload": "unload a model version (default: every version)",
    "reload": "re-read a model from the repository; the old one serves until the new one is ready",
}


def register(subparsers: Any) -> None:
    for command, help_text in _HELP.items():
        parser = subparsers.add_parser(
            command,
            parents=[connection_options()],
            help=help_text,
            description=help_text[0].upper() + help_text[1:] + ".",
        )
        add_model_options(parser)
        parser.set_defaults(handler=run, lifecycle_command=command)


def run(args: argparse.Namespace) -> int:
    with connect(args) as client:
        if args.lifecycle_command == "unload":
            statuses = client.unload(args.model, args.version)
        elif args.lifecycle_command == "reload":
            statuses = [client.reload(args.model, args.version)]
        else:
            statuses = [client.load(args.model, args.version)]
    print(format_statuses(statuses))
    return 0
