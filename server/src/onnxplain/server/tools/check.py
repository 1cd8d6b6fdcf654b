"""`onnxplain check MODEL.onnx`: what the server would make of a model, without a server. The model is loaded as the
server loads it; then, per method, what its metadata would say, whether one call on a probe image runs and gives
finite maps, and what it costs next to a plain forward pass; and whether the input gradient agrees with finite
differences. Exit status: 0 all is well, 1 onnxplain failed on the model (a method metadata calls supported failed,
or the gradient disagrees), 2 the check could not run (a usage error, or a model the server cannot load)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from onnxplain.server.engine.gradients import BackwardSpec, backward_session
from onnxplain.server.handlers.forward import score_images
from onnxplain.server.handlers.models import method_support
from onnxplain.server.methods.gradient_base import EveryClassMethod, GradientMethod
from onnxplain.server.methods.registry import METHODS
from onnxplain.server.repository.model import LoadedModel, ModelLoadError
from onnxplain.server.settings import ServerSettings
from onnxplain.server.tools import finite_differences
from onnxplain.server.tools.method_trial import MethodOutcome, forward_seconds, try_method
from onnxplain.server.tools.model_file import UsageError, load
from onnxplain.server.tools.probe import Probe, probe_image, show_shape

# Exit codes: all is well; onnxplain failed on the model; the check could not run.
OK, FAILED, CANNOT_CHECK = 0, 1, 2
PROBE_SEED = 0


@dataclass(frozen=True)
class GradientAgreement:
    """The plain input gradient against finite differences, or why it was not compared."""

    verdict: Literal["agrees", "disagrees", "failed", "not checked"]
    tolerance: float
    reason: str = ""
    max_relative_error: float | None = None
    directions: list[finite_differences.Direction] = field(default_factory=list)


@dataclass(frozen=True)
class CheckReport:
    model: str
    input: str
    output: str
    num_classes: int | None
    output_kind: str
    providers: list[str]
    probe: str
    forward_seconds: float
    gradient: GradientAgreement
    methods: list[MethodOutcome]

    @property
    def exit_code(self) -> int:
        failed = any(outcome.verdict == "failed" for outcome in self.methods)
        return FAILED if failed or self.gradient.verdict in ("disagrees", "failed") else OK


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="onnxplain-check-") as empty_dir:
        try:
            names = _selected(args.methods)
            model, settings = load(args.model, args.config, Path(empty_dir))
            probe = probe_image(model, args.size, PROBE_SEED)
        except (UsageError, ModelLoadError) as error:
            print(f"error: {args.model}: {error}", file=sys.stderr)
            return CANNOT_CHECK
        try:
            (scores,) = score_images(model, [probe.tensor])
        except Exception as error:  # the server would fail every request of this shape the same way
            print(f"error: {args.model}: the model fails on the probe image: {error}", file=sys.stderr)
            return CANNOT_CHECK
        report = check(model, settings, probe, scores, names, args.tolerance)
    print(json.dumps(_as_json(report), indent=2) if args.json else _as_text(report))
    return report.exit_code


def check(
    model: LoadedModel,
    settings: ServerSettings,
    probe: Probe,
    scores: np.ndarray,
    names: list[str],
    tolerance: float,
) -> CheckReport:
    """The report on methods `names`, given the probe's raw scores. Metadata's word on every method is taken before
    any call, as a client would read it right after the load."""
    support = {entry.name: entry for entry in method_support(model)}
    forward = forward_seconds(model, probe.tensor)
    needs_gradient = any(isinstance(METHODS[name], GradientMethod) for name in names)
    gradient = (
        _gradient_agreement(model, probe, tolerance) if needs_gradient else GradientAgreement("not checked", tolerance)
    )
    outcomes = {name: try_method(model, support[name], probe.tensor, scores, settings) for name in _trial_order(names)}
    signature = model.signature
    image_input = f"{signature.input.dtype} input {signature.input.name!r} {show_shape(signature.input.shape)}"
    return CheckReport(
        model=str(model.source.path),
        input=f"{signature.layout} {image_input}",
        output=signature.output.name,
        num_classes=model.num_classes,
        output_kind=model.output_kind,
        providers=model.session.providers,
        probe=probe.description,
        forward_seconds=forward,
        gradient=gradient,
        methods=[outcomes[name] for name in names],
    )


def _trial_order(names: list[str]) -> list[str]:
    """Methods that take the gradient of every class last: each is stopped after its first batch on graphs already
    built, so it should find the graph it shares with a method of one pass (CLEAR's DeconvNet graph) built, not
    build it in its first batch and run a second."""
    return sorted(names, key=lambda name: isinstance(METHODS[name], EveryClassMethod))


def _gradient_agreement(model: LoadedModel, probe: Probe, tolerance: float) -> GradientAgreement:
    reason = METHODS["gradient"].unsupported_reason(model)
    if reason:
        return GradientAgreement("not checked", tolerance, reason)
    try:
        session = backward_session(model, probe.tensor.shape, BackwardSpec())
        directions = finite_differences.compare(model, session, probe.tensor, finite_differences.DIRECTIONS, PROBE_SEED)
    except Exception as error:  # metadata calls the gradient supported: any failure is onnxplain's
        return GradientAgreement("failed", tolerance, f"{type(error).__name__}: {error}")
    worst = finite_differences.worst_error(directions)
    verdict = "agrees" if worst < tolerance else "disagrees"
    return GradientAgreement(verdict, tolerance, "", worst, directions)


def _selected(methods: str | None) -> list[str]:
    if methods is None:
        return sorted(METHODS)
    names = [name.strip() for name in methods.split(",") if name.strip()]
    unknown = [name for name in names if name not in METHODS]
    if unknown or not names:
        given = ", ".join(unknown) or "(none given)"
        raise UsageError(f"unknown method(s) {given}; known: {', '.join(sorted(METHODS))}")
    return names


def _as_json(report: CheckReport) -> dict:
    return {**asdict(report), "exit_code": report.exit_code}


def _as_text(report: CheckReport) -> str:
    classes = "?" if report.num_classes is None else report.num_classes
    lines = [
        f"{report.model}: {report.input}",
        f"explaining output {report.output!r}: {classes} classes, {report.output_kind}",
        f"providers: {', '.join(report.providers)}",
        f"probe: {report.probe}; one forward pass {report.forward_seconds * 1e3:.1f} ms",
        f"input gradient vs finite differences: {_agreement(report.gradient)}",
        "",
        f"{'method':<22} {'result':<12} {'time':>16}  note",
    ]
    for outcome in report.methods:
        line = f"{outcome.name:<22} {outcome.verdict:<12} {_time(outcome, report):>16}  {_note(outcome)}"
        lines.append(line.rstrip())
    lines += ["", _summary(report)]
    return "\n".join(lines)


def _agreement(gradient: GradientAgreement) -> str:
    if gradient.verdict == "not checked":
        return f"not checked{': ' + gradient.reason if gradient.reason else ' (no gradient method selected)'}"
    if gradient.verdict == "failed":
        return f"FAILED: {gradient.reason}"
    verdict = "ok" if gradient.verdict == "agrees" else "DISAGREES"
    return (
        f"max relative error {gradient.max_relative_error:.1e} over {len(gradient.directions)} directions "
        f"(tolerance {gradient.tolerance:.0e}): {verdict}"
    )


def _time(outcome: MethodOutcome, report: CheckReport) -> str:
    if outcome.seconds is None:
        return "-"
    estimated = "~" if outcome.verdict == "stopped" else ""
    return f"{estimated}{outcome.seconds / report.forward_seconds:.1f}x forward"


def _note(outcome: MethodOutcome) -> str:
    if outcome.verdict == "unsupported":
        return outcome.reason
    if outcome.verdict == "failed":
        return outcome.failure
    passes = f"{outcome.forward_passes} forward, {outcome.backward_passes} backward passes"
    if outcome.verdict == "stopped":
        passes = f"stopped after {outcome.stopped_after} of its {outcome.passes_needed} passes (maps not checked)"
    parameters = ", ".join(f"{name}={value}" for name, value in outcome.parameters.items())
    return f"{passes}; {parameters}" if parameters else passes


def _summary(report: CheckReport) -> str:
    verdicts = ("ok", "stopped", "unsupported", "failed")
    counts = {verdict: sum(o.verdict == verdict for o in report.methods) for verdict in verdicts}
    summary = ", ".join(f"{counts[verdict]} {verdict}" for verdict in verdicts)
    if report.exit_code == OK:
        return f"{summary}: every method metadata calls supported ran"
    return (
        f"{summary}: onnxplain failed on this model (a method metadata calls supported failed, or the gradient "
        "disagrees with finite differences); please report it with this output"
    )
