"""`onnxplain predict`: the top-k classes of each image."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from onnxplain.client.cli.common import add_model_options, add_output_option, connect, connection_options, format_table
from onnxplain.client.results import Prediction


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "predict",
        parents=[connection_options()],
        help="classify images",
        description="Print the top-k classes of each image.",
    )
    add_model_options(parser)
    parser.add_argument("--top-k", type=int, default=5, metavar="K", help="classes per image (default: 5)")
    add_output_option(parser, "score")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, BMP, WebP)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with connect(args) as client:
        predictions = client.predict(
            args.model, list(args.images), version=args.version, top_k=args.top_k, output=args.output
        )
    if args.json:
        print(
            json.dumps(
                [
                    {"image": image, "top": [asdict(item) for item in prediction.top]}
                    for image, prediction in zip(args.images, predictions, strict=True)
                ],
                indent=2,
            )
        )
    else:
        print(
            "\n\n".join(
                format_prediction(image, prediction) for image, prediction in zip(args.images, predictions, strict=True)
            )
        )
    return 0


def format_prediction(image: str, prediction: Prediction) -> str:
    rows = [(item.class_index, item.label, f"{item.score:.4f}", f"{item.probability:.4f}") for item in prediction.top]
    return f"{image}\n" + format_table(("CLASS", "LABEL", "SCORE", "PROBABILITY"), rows)
