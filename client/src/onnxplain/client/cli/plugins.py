"""Commands from other distributions: each entry point in the `onnxplain.commands` group names a function
`register(subparsers) -> None` that adds one subcommand and sets its `handler(args) -> int | None` default.

The server distribution adds `serve` this way, so the client never imports the server's heavy dependencies.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from importlib.metadata import entry_points
from typing import Any

ENTRY_POINT_GROUP = "onnxplain.commands"
SERVER_MISSING = "the server is not installed: pip install onnxplain-server"


def register_plugins(subparsers: Any) -> None:
    """A plugin that fails to load must not take the client commands down: its command reports the failure."""
    failures: dict[str, str] = {}
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry_point.load()(subparsers)
        except Exception as error:
            failures[entry_point.name] = f"the {entry_point.name!r} command failed to load: {error}"
    for name, message in failures.items():
        if name not in subparsers.choices:
            add_unavailable_command(subparsers, name, message)
    if "serve" not in subparsers.choices:
        add_unavailable_command(subparsers, "serve", SERVER_MISSING, help_text="run the server (not installed)")


def add_unavailable_command(subparsers: Any, name: str, message: str, *, help_text: str | None = None) -> None:
    """A stand-in that accepts any arguments, so `onnxplain serve --port 1` explains itself instead of a usage error."""
    parser = subparsers.add_parser(name, help=help_text or message, add_help=False)
    parser.set_defaults(handler=partial(_report, message), accepts_unknown_args=True)


def _report(message: str, args: argparse.Namespace) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1
