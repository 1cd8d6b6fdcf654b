"""`onnxplain audit`: a folder or CSV of images through the service, resumable, summed up in report.html."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from onnxplain.client.audit.image_audit import ImageAuditor
from onnxplain.client.audit.notes import MetricNote, RunNotes, load_notes, save_notes
from onnxplain.client.audit.report import write_report
from onnxplain.client.audit.retry import Backoff, with_retries
from onnxplain.client.audit.runner import prepare_output, run_audit
from onnxplain.client.audit.settings import AuditSettings, pin_settings, read_settings
from onnxplain.client.audit.sources import check_labels, list_images
from onnxplain.client.audit.summary import summarize
from onnxplain.client.cli.arguments import parse_param
from onnxplain.client.cli.common import add_model_options, connect, connection_options, positive_float
from onnxplain.client.parameters import ParameterValue


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "audit",
        parents=[connection_options()],
        help="audit a model on a folder or CSV of images: accuracy, maps, metrics, an HTML report",
        description="Predict, explain and score every image, writing results.jsonl, maps/ (.npy), overlays/ (.png) "
        "and report.html into OUT as it goes. Run it again with the same options to resume an interrupted audit.",
    )
    add_model_options(parser)
    parser.add_argument(
        "--images",
        type=Path,
        metavar="DIR|CSV",
        help="a folder of images, or a CSV (path[,label]"
        "[,box_top,box_left,box_height,box_width]) with paths relative to it",
    )
    parser.add_argument("--labels", type=Path, metavar="CSV", help="image,label[,box_...] lines for the images")
    parser.add_argument("--methods", type=_names, metavar="M,M", help="attribution methods, e.g. grad_cam,rise")
    parser.add_argument(
        "--param",
        dest="params",
        action="append",
        type=_method_param,
        default=[],
        metavar="METHOD.KEY=VALUE",
        help="a method parameter, e.g. occlusion.window=8,8; repeatable",
    )
    parser.add_argument(
        "--metrics",
        type=_names,
        default=("deletion", "insertion"),
        metavar="M,M",
        help="metrics of each map (default: deletion,insertion; pointing_game and mass_in_region are added for "
        "images with a box); none: no metrics",
    )
    parser.add_argument(
        "--metric-param",
        dest="metric_params",
        action="append",
        type=parse_param,
        default=[],
        metavar="KEY=VALUE",
        help="a metric parameter, e.g. step=64; repeatable",
    )
    parser.add_argument("--concurrency", type=_positive_int, default=4, metavar="N", help="images in flight (4)")
    parser.add_argument(
        "--give-up-after",
        type=positive_float,
        default=600.0,
        metavar="SECONDS",
        help="how long to keep retrying a server that is unavailable before stopping (600)",
    )
    parser.add_argument(
        "--report-images",
        choices=("inline", "link"),
        default="inline",
        help="inline: pictures inside report.html (one file); link: point at overlays/ beside it (a smaller page)",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="only rebuild report.html from OUT, with the audit's own settings"
    )
    parser.add_argument("--out", type=Path, required=True, metavar="OUT", help="output folder")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.report_only:
        settings = read_settings(args.out)
        if args.model != settings.model:
            raise ValueError(f"{args.out} holds an audit of {settings.model}, not {args.model}")
    else:
        if args.images is None or not args.methods:
            print("error: --images and --methods are required (unless --report-only)", file=sys.stderr)
            return 2
        settings = _settings(args)
        _audit(args, settings)
    notes = load_notes(args.out)
    journal = prepare_output(args.out)
    summary = summarize(journal.read(), settings, args.out)
    report = write_report(args.out, summary, settings, notes, inline=args.report_images == "inline")
    accuracy = "n/a" if summary.accuracy is None else f"{summary.accuracy:.2%}"
    print(
        f"{len(summary.audited)} images audited, {len(summary.skipped)} skipped, {len(notes.problems)} input "
        f"problems; accuracy {accuracy}; report: {report}"
    )
    return 0


def _audit(args: argparse.Namespace, settings: AuditSettings) -> None:
    images, problems = list_images(args.images, args.labels, exclude=args.out)
    backoff = Backoff(give_up_after=args.give_up_after)
    with connect(args) as client:
        metadata = with_retries(lambda: client.metadata(settings.model, settings.version), backoff)
        unsupported = sorted(set(settings.methods) - set(metadata.supported_methods))
        if unsupported:
            raise ValueError(f"{settings.model} does not support {', '.join(unsupported)}")
        metrics = {info.name: info for info in with_retries(client.metrics, backoff)}
        unknown = sorted(set(settings.metrics) - set(metrics))
        if unknown:
            raise ValueError(f"unknown metrics {', '.join(unknown)}; the server has {', '.join(metrics)}")
        class_names = metadata.labels or [str(index) for index in range(metadata.num_classes)]
        images, label_problems = check_labels(images, class_names)
        problems += label_problems
        for problem in problems:
            print(f"{problem.where}: {problem.message}", file=sys.stderr)
        journal = prepare_output(args.out)
        pin_settings(args.out, settings)
        notes = {name: MetricNote(info.description, info.higher_is_better) for name, info in metrics.items()}
        save_notes(args.out, RunNotes(problems, notes))
        auditor = ImageAuditor(client, settings, class_names, args.out, backoff)
        run_audit(auditor, images, journal, args.concurrency, stop=auditor.stop)


def _settings(args: argparse.Namespace) -> AuditSettings:
    method_params: dict[str, dict[str, ParameterValue]] = {}
    for method, name, value in args.params:
        if method not in args.methods:
            raise ValueError(f"--param {method}.{name}: {method} is not among --methods")
        method_params.setdefault(method, {})[name] = value
    return AuditSettings(
        model=args.model,
        version=args.version,
        methods=args.methods,
        method_params=method_params,
        metrics=() if args.metrics == ("none",) else args.metrics,
        metric_params=dict(args.metric_params),
    )


def _names(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list of names")
    return names


def _method_param(text: str) -> tuple[str, str, ParameterValue]:
    key, value = parse_param(text)
    method, dot, name = key.partition(".")
    if not dot or not method or not name:
        raise argparse.ArgumentTypeError(f"expected METHOD.KEY=VALUE, got {text!r}")
    return method, name, value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value
