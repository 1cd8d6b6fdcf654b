"""Commands that work on a model file without a running server, registered into the client's `onnxplain` CLI
through the `onnxplain.commands` entry point like `serve`. Registration imports argparse only: every `onnxplain`
command loads it, so the work (onnx, ONNX Runtime, numpy) is imported when the command runs."""

from __future__ import annotations

import argparse
from pathlib import Path

# The largest relative error between the input gradient and finite differences that passes
# (tools/finite_differences.py, which is not imported here).
DEFAULT_TOLERANCE = 1e-2


def register_check(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check",
        help="check what the server makes of a model: which methods run, and whether its gradients are right",
        description=(
            "Load an ONNX classifier as the server does, then for every method say whether model metadata would "
            "call it supported (and why not), call it on a synthetic probe image (with few samples, masks or steps "
            "where its defaults are costly; stopped after a batch when its passes grow with the model's classes), "
            "check that its maps are finite, and time a call on graphs already built against one plain forward "
            "pass. The input "
            "gradient is compared with central finite differences along random directions. Exit codes: 0 every "
            "method metadata calls supported ran and the gradient agrees; 1 a supported method failed or the "
            "gradient disagrees (an onnxplain bug: please report it); 2 the check could not run (a usage error, or "
            "a model the server cannot load: the reason is printed)."
        ),
    )
    parser.add_argument("model", type=Path, metavar="MODEL.onnx")
    parser.add_argument(
        "--config",
        type=Path,
        metavar="config.yaml",
        help="the model's config (output choice, preprocessing, size); default: the config.yaml beside the version "
        "folder when MODEL.onnx sits in a model repository (DIR/<name>/<version>/model.onnx)",
    )
    parser.add_argument(
        "--size",
        type=_positive,
        nargs=2,
        metavar=("H", "W"),
        help="the probe image's height and width, for a model whose input size neither the graph nor the "
        "preprocessing fixes (the picture's size before preprocessing when the config has some)",
    )
    parser.add_argument("--methods", metavar="a,b", help="comma-separated methods to check (default: all)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help=f"largest relative gradient error that passes (default {DEFAULT_TOLERANCE:g})",
    )
    parser.set_defaults(handler=_run_check)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _run_check(args: argparse.Namespace) -> int:
    from onnxplain.server.tools.check import run

    return run(args)
