"""One image's audit: predict, explain with every method, score the maps, write the files, return its journal line.

The predicted class is explained, and for a misclassified image the true class too, so the report can show both
maps side by side. A failure that belongs to the image (it does not decode, the server cannot handle it) becomes a
"skipped" line with the reason; transport failures are retried; anything else stops the audit.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

from onnxplain.client.audit.journal import save_array, write_atomically
from onnxplain.client.audit.retry import Backoff, with_retries
from onnxplain.client.audit.settings import AuditSettings
from onnxplain.client.audit.sources import AuditImage
from onnxplain.client.errors import OnnxplainError
from onnxplain.client.evaluation import MethodSpec, Region
from onnxplain.client.results import Explanation
from onnxplain.client.sync import Client

R = TypeVar("R")

MAPS_FOLDER = "maps"
OVERLAYS_FOLDER = "overlays"
IMAGE_FAULTS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
    }
)
"""Codes that concern one image, not the server or the settings: the image is skipped, the audit goes on."""


class _Skip(Exception):
    pass


@dataclass(frozen=True)
class ImageAuditor:
    client: Client
    settings: AuditSettings
    class_names: list[str]
    out_dir: Path
    backoff: Backoff
    stop: threading.Event = field(default_factory=threading.Event)
    """Set when the audit stops: calls waiting to be retried give up (retry.Stopped) instead of holding it up."""

    def __call__(self, image: AuditImage) -> dict[str, Any]:
        record: dict[str, Any] = {"image": image.key, "id": image.id, "label": image.label}
        record["box"] = None if image.box is None else list(astuple(image.box))
        try:
            record.update(self._audit(image))
        except _Skip as reason:
            record.update(status="skipped", reason=str(reason))
        return record

    def _audit(self, image: AuditImage) -> dict[str, Any]:
        try:
            data = image.path.read_bytes()
        except OSError as error:
            raise _Skip(f"cannot read the file: {error.strerror or error}") from None
        settings = self.settings
        prediction = self._call("predict", lambda: self.client.predict(settings.model, data, version=settings.version))
        targets = [prediction.class_index]
        true_index = None if image.label is None else self.class_names.index(image.label)
        if true_index is not None and true_index != prediction.class_index:
            targets.append(true_index)
        explanations = {method: self._explain(data, method, targets) for method in settings.methods}
        metrics = self._metrics(data, explanations, image, prediction.class_index)
        first = next(iter(explanations.values()))
        geometry = first.geometry
        return {
            "status": "ok",
            "version": first.version,
            "label_index": true_index,
            "predicted": {
                "index": prediction.class_index,
                "label": prediction.label,
                "probability": prediction.probability,
            },
            "targets": targets,
            "size": None if geometry is None else [geometry.original_height, geometry.original_width],
            "methods": {
                method: self._save(image, explanation, metrics.get(method, {}))
                for method, explanation in explanations.items()
            },
        }

    def _explain(self, data: bytes, method: str, targets: list[int]) -> Explanation:
        params = self.settings.method_params.get(method, {})
        return self._call(
            f"explain {method}",
            lambda: self.client.explain(
                self.settings.model,
                data,
                method=method,
                target=list(targets),
                version=self.settings.version,
                overlay=True,
                **params,
            ),
        )

    def _metrics(
        self, data: bytes, explanations: dict[str, Explanation], image: AuditImage, predicted: int
    ) -> dict[str, dict[str, float]]:
        """Per method, the metric values of its map of the predicted class."""
        metrics = self.settings.metrics_for(image.box is not None)
        if not metrics:
            return {}
        box = image.box
        specs = [
            MethodSpec(name=method, method=method, attributions=[explanation.attribution[:1]])
            for method, explanation in explanations.items()
        ]
        evaluation = self._call(
            "evaluate",
            lambda: self.client.evaluate(
                self.settings.model,
                data,
                version=self.settings.version,
                methods=specs,
                metrics=metrics,
                target=[predicted],
                regions=None if box is None else Region.from_box(box.top, box.left, box.height, box.width),
                **self.settings.metric_params,
            ),
        )
        return {
            explainer.name: {metric: explainer.images[0][0].values[metric] for metric in evaluation.metrics}
            for explainer in evaluation.explainers
        }

    def _save(self, image: AuditImage, explanation: Explanation, metrics: dict[str, float]) -> dict[str, Any]:
        base = f"{image.id}.{explanation.method}"
        maps = Path(MAPS_FOLDER, f"{base}.npy")
        save_array(self.out_dir / maps, explanation.attribution)
        overlays = [Path(OVERLAYS_FOLDER, f"{base}.png"), Path(OVERLAYS_FOLDER, f"{base}.true.png")]
        for path, picture in zip(overlays, explanation.overlays, strict=False):
            write_atomically(self.out_dir / path, picture)
        written = overlays[: len(explanation.overlays)]
        return {
            "map": maps.as_posix(),
            "overlay": written[0].as_posix(),
            "true_overlay": written[1].as_posix() if len(written) > 1 else None,
            "metrics": metrics,
        }

    def _call(self, step: str, call: Callable[[], R]) -> R:
        def report(error: OnnxplainError, delay: float) -> None:
            print(f"\n{step}: {error}; retrying in {delay:.1f}s", file=sys.stderr, flush=True)

        try:
            return with_retries(call, self.backoff, on_retry=report, wait=self.stop.wait)
        except OnnxplainError as error:
            if error.code in IMAGE_FAULTS:
                raise _Skip(f"{step}: {error}") from None
            raise
