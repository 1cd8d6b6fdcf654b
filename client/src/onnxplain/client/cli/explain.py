"""`onnxplain explain`: attribution maps of images, saved as .npy plus the server-rendered PNG overlays."""

from __future__ import annotations

import argparse
import inspect
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from onnxplain.client.cli.arguments import parse_param, parse_target, targets_argument
from onnxplain.client.cli.common import add_model_options, add_output_option, connect, connection_options
from onnxplain.client.errors import InvalidArgumentError, OnnxplainError
from onnxplain.client.results import Explanation, Progress
from onnxplain.client.sync import Client

# Failures no other image of the run can escape (no server, no access, no such model or method, a model that is not
# loaded): the run stops at the first instead of repeating it for every file.
_FAILS_EVERY_IMAGE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "explain",
        parents=[connection_options()],
        help="explain images: save attribution maps and overlays",
        description="Explain each image: write <stem>.<method>.npy (the maps) and <stem>.<method>.png (overlay; "
        "with several targets one <stem>.<method>.t<class>.png per target) into OUTDIR.",
    )
    add_model_options(parser)
    parser.add_argument("--method", required=True, metavar="M", help="attribution method (`onnxplain methods`)")
    add_output_option(parser, "explain")
    parser.add_argument(
        "--target",
        dest="targets",
        action="append",
        type=parse_target,
        metavar="T",
        help="class index, label, or topK like top3; repeatable (default: the top-1 class)",
    )
    parser.add_argument(
        "--param",
        dest="params",
        action="append",
        type=parse_param,
        default=[],
        metavar="KEY=VALUE",
        help="method parameter, e.g. window=8,8 steps=32 abs=true; repeatable",
    )
    parser.add_argument(
        "--score-space",
        choices=("raw", "probability"),
        default="raw",
        help="explain raw outputs or softmax probabilities (default: raw)",
    )
    parser.add_argument(
        "--attribution-shape",
        choices=("spatial", "input"),
        default="spatial",
        help="maps as (H, W) or in the model's input shape (default: spatial)",
    )
    parser.add_argument("--colormap", metavar="NAME", help="overlay colormap, e.g. jet, inferno, viridis")
    parser.add_argument(
        "--polarity",
        choices=("absolute", "positive", "negative", "both"),
        help="which sign the overlay shows; both: positive green, negative red (default absolute)",
    )
    parser.add_argument("--no-overlay", dest="overlay", action="store_false", help="skip the PNG overlays")
    parser.add_argument(
        "--segments",
        action="append",
        type=Path,
        metavar="NPY",
        help="(H, W) integer segment ids at model-input resolution for segment-based methods (.npy); one per image, "
        "in the order of the images",
    )
    parser.add_argument("--progress", action="store_true", help="stream and show progress on stderr")
    parser.add_argument("-o", "--output-dir", type=Path, required=True, metavar="OUTDIR")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, BMP, WebP)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    reserved = sorted(set(dict(args.params)) & _explain_keywords())
    if reserved:
        print(f"error: --param cannot set {', '.join(reserved)}: use the options of the same name", file=sys.stderr)
        return 2
    clashes = sorted(stem for stem, count in Counter(Path(image).stem for image in args.images).items() if count > 1)
    if clashes:
        print(f"error: several images named {', '.join(clashes)} would overwrite each other's outputs", file=sys.stderr)
        return 2
    segments = args.segments or []
    if segments and len(segments) != len(args.images):
        print(f"error: {len(segments)} --segments files for {len(args.images)} images", file=sys.stderr)
        return 2
    args.output_dir.mkdir(parents=True, exist_ok=True)
    failed = []
    with connect(args) as client:
        # One request per image: each gets its own cost line, and a bad file does not sink the others' results.
        for index, image in enumerate(args.images):
            try:
                image_segments = _load_segments(segments[index]) if segments else None
                explanation = _explain(client, image, image_segments, args)
            except OnnxplainError as error:
                if error.code in _FAILS_EVERY_IMAGE:
                    raise
                print(f"error: {_about_one_image(image, error)}", file=sys.stderr)
                failed.append(image)
                continue
            written = save_explanation(explanation, args.output_dir, Path(image).stem)
            print(summarize(image, explanation, written))
            if args.overlay and args.polarity == "both" and explanation.attribution.min() >= 0:
                print(f"warning: {image}: {_one_signed_warning(explanation.method)}", file=sys.stderr)
    if failed:
        explained = f"{len(args.images) - len(failed)} of {len(args.images)} images explained"
        print(f"error: {explained}; failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _load_segments(path: Path) -> np.ndarray:
    try:
        return np.load(path)
    except OSError as error:
        raise InvalidArgumentError(f"--segments {path}: {error.strerror or error}") from error
    except ValueError as error:  # np.load's answer to a file that holds no .npy array
        raise InvalidArgumentError(f"--segments {path}: not an .npy array ({error})") from error


def _about_one_image(image: str, error: OnnxplainError) -> str:
    """`IMAGE: CODE: why`. The server's "image 0: " only says where in the request the image was (each request here
    holds one image), and the client's own errors start with the file's path already."""
    reason = error.message.removeprefix("image 0: ").removeprefix(f"{Path(image)}: ")
    return f"{image}: {error.code.name}: {reason}"


def _one_signed_warning(method: str) -> str:
    """Why --polarity both misleads on a map without negative values: its diverging scale has nothing to set against
    the evidence for the target, so the picture reads as all evidence."""
    return (
        f"the {method} map has no negative values, so --polarity both has nothing to show against the target (red); "
        "--polarity positive (or absolute) shows the same map on the full colour scale"
    )


def _explain_keywords() -> set[str]:
    """Parameter names that would collide with Client.explain's own keyword arguments."""
    signature = inspect.signature(Client.explain)
    return {name for name, parameter in signature.parameters.items() if parameter.kind is parameter.KEYWORD_ONLY}


def _explain(client: Client, image: str, segments: np.ndarray | None, args: argparse.Namespace) -> Explanation:
    options: dict[str, Any] = {
        "segments": segments,
        "method": args.method,
        "target": targets_argument(args.targets),
        "version": args.version,
        "output": args.output,
        "attribution_shape": args.attribution_shape,
        "score_space": args.score_space,
        "overlay": args.overlay,
        "colormap": args.colormap if args.overlay else None,
        "polarity": args.polarity if args.overlay else None,
        **dict(args.params),
    }
    if not args.progress:
        return client.explain(args.model, image, **options)
    result = None
    progress_shown = False
    try:
        for event in client.explain_stream(args.model, image, **options):
            if isinstance(event, Progress):
                print(
                    f"\r{image}: {event.passes_done}/{event.passes_total} passes, {event.elapsed_seconds:.1f}s",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
                progress_shown = True
            elif isinstance(event, Explanation):
                result = event
    finally:
        if progress_shown:  # end the progress line, so what follows (an error too) starts on a line of its own
            print(file=sys.stderr)
    if result is None:
        raise ValueError(f"{image}: the stream ended without a result")
    return result


def save_explanation(explanation: Explanation, output_dir: Path, stem: str) -> list[Path]:
    """Writes the maps and overlays; returns the paths written, the .npy first."""
    base = f"{stem}.{explanation.method}"
    maps_path = output_dir / f"{base}.npy"
    np.save(maps_path, explanation.attribution)
    written = [maps_path]
    # Segments and method extras (e.g. clear's dominant_class) beside the maps, one .npy each.
    arrays = {"segments": explanation.segments, **explanation.extras}
    for name, array in arrays.items():
        if array is not None:
            path = output_dir / f"{base}.{name}.npy"
            np.save(path, array)
            written.append(path)
    for name, picture in explanation.renderings.items():
        path = output_dir / f"{base}.{name}.png"
        path.write_bytes(picture)
        written.append(path)
    several = len(explanation.targets) > 1
    for class_index, overlay in zip(explanation.targets, explanation.overlays, strict=False):
        overlay_path = output_dir / (f"{base}.t{class_index}.png" if several else f"{base}.png")
        overlay_path.write_bytes(overlay)
        written.append(overlay_path)
    return written


def summarize(image: str, explanation: Explanation, written: list[Path]) -> str:
    targets = ", ".join(
        f"{index} ({label})" if label else str(index)
        for index, label in zip(explanation.targets, explanation.labels, strict=True)
    )
    cost = explanation.cost
    passes = f"{cost.forward_passes} forward" + (f" + {cost.backward_passes} backward" if cost.backward_passes else "")
    seconds = f"{cost.elapsed_seconds:.2f}s"
    files = ", ".join(map(str, written))
    return f"{image}: {explanation.method} targets {targets}; {passes} passes, {seconds} -> {files}"
