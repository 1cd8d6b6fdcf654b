"""Commands that work on a model file without a running server, registered into the client's `onnxplain` CLI
through the `onnxplain.commands` entry point like `serve`. Registration imports argparse only: every `onnxplain`
command loads it, so the work (onnx, ONNX Runtime, numpy) is imported when the command runs."""

from __future__ import annotations

import argparse
from pathlib import Path


def register_check_gradients(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check-gradients",
        help="compare a model's backward graph with finite differences",
        description=(
            "Build the backward graph of an ONNX classifier as the server does and compare seedᵀ·J·v with the "
            "central finite difference seedᵀ·(f(x+hv) - f(x-hv))/2h at a random input x in [0, 1), a random seed "
            "over the classes and random unit directions v (the gradient reweighted by random positive weights), "
            "each at several steps h. Exit codes: 0 the gradients agree within --tolerance, 1 they do not, 2 the "
            "check could not run (an op without a gradient rule, a model that is not an image classifier, a "
            "dynamic image size without --size)."
        ),
    )
    parser.add_argument("model", type=Path, metavar="MODEL.onnx")
    parser.add_argument(
        "--size", type=int, nargs=2, metavar=("H", "W"), help="image height and width (needed for dynamic sizes)"
    )
    parser.add_argument(
        "--directions", type=_positive, default=8, help="random directions to compare along (default 8)"
    )
    parser.add_argument(
        "--epsilon",
        type=float,
        default=1e-3,
        help="largest finite-difference step, relative to ‖x‖ (default 1e-3)",
    )
    parser.add_argument(
        "--steps",
        type=_positive,
        default=5,
        help="steps tried per direction, a decade apart from --epsilon down; the best agreement counts (default 5)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of the input, seed vector and directions")
    parser.add_argument(
        "--probability", action="store_true", help="differentiate the probabilities instead of the logits"
    )
    parser.add_argument(
        "--rule-set",
        default="gradient",
        choices=("gradient",),
        help="the rule set to build with; only the plain gradient is comparable with finite differences",
    )
    parser.add_argument(
        "--tolerance", type=float, default=1e-2, help="largest relative error that passes (default 1e-2)"
    )
    parser.set_defaults(handler=_run_check_gradients)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _run_check_gradients(args: argparse.Namespace) -> int:
    from onnxplain.server.tools.check_gradients import run

    return run(args)
