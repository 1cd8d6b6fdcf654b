"""Entry point of the `onnxplain` command: builds the parser from the command modules and maps failures to exit codes.

Exit codes: 0 success, 1 the server refused (or a local file could not be read), 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from onnxplain.client.cli import audit, explain, lifecycle, metadata, methods, models, predict
from onnxplain.client.cli.common import SERVER_HINT
from onnxplain.client.cli.plugins import register_plugins
from onnxplain.client.errors import OnnxplainError, ServerUnreachableError

_COMMANDS = (models, metadata, methods, predict, explain, audit, lifecycle)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onnxplain", description="Explain the decisions of ONNX image classifiers.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_client_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in _COMMANDS:
        command.register(subparsers)
    register_plugins(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "accepts_unknown_args", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return args.handler(args) or 0
    except OnnxplainError as error:
        print(f"error: {error}", file=sys.stderr)
        if isinstance(error, ServerUnreachableError):
            print(f"hint: {SERVER_HINT}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _client_version() -> str:
    try:
        return version("onnxplain-client")
    except PackageNotFoundError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
