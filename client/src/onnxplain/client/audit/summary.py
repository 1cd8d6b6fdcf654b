"""What the journal adds up to: accuracy, the confusion matrix, metric means, per-class mean maps and the outliers.

Everything is computed from results.jsonl (and the maps it names), so a resumed audit's summary covers every run.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxplain.client.audit.settings import AuditSettings

MOSTLY_OUTSIDE = 0.5
"""An image is listed when less than this share of its map's mass lies in its box (metric mass_in_region)."""


@dataclass(frozen=True)
class ClassMean:
    class_index: int
    label: str
    count: int
    map: np.ndarray
    """Mean of the maps, each divided by its largest |value| first so that every image weighs the same."""


@dataclass(frozen=True)
class Outlier:
    record: dict[str, Any]
    method: str
    mass_in_box: float


@dataclass
class AuditSummary:
    audited: list[dict[str, Any]]
    """Journal lines of the images with results, in key order."""
    skipped: list[dict[str, Any]]
    methods: list[str]
    metrics: list[str]
    versions: list[str] = field(default_factory=list)
    """The model versions that answered (more than one if the model was updated during the audit)."""
    labelled: int = 0
    correct: int = 0
    classes: list[tuple[int, str]] = field(default_factory=list)
    """The classes that occur as a label or a prediction: the rows and columns of the confusion matrix."""
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    """confusion[i, j]: images of class classes[i] predicted as classes[j]."""
    metric_means: dict[str, dict[str, float]] = field(default_factory=dict)
    mean_maps: dict[str, list[ClassMean]] = field(default_factory=dict)
    outside_box: list[Outlier] = field(default_factory=list)
    misclassified: list[dict[str, Any]] = field(default_factory=list)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None


def summarize(records: list[dict[str, Any]], settings: AuditSettings, out_dir: Path) -> AuditSummary:
    methods = list(settings.methods)
    latest = {record["image"]: record for record in records}  # a redone image's last line wins
    ordered = [latest[key] for key in sorted(latest)]
    audited = [record for record in ordered if record["status"] == "ok"]
    summary = AuditSummary(
        audited=audited,
        skipped=[record for record in ordered if record["status"] != "ok"],
        methods=methods,
        metrics=_metric_names(audited, settings),
        versions=sorted({record["version"] for record in audited}),
    )
    labelled = [record for record in audited if record["label_index"] is not None]
    summary.labelled = len(labelled)
    summary.misclassified = [record for record in labelled if _is_wrong(record)]
    summary.correct = len(labelled) - len(summary.misclassified)
    summary.classes, summary.confusion = _confusion(labelled)
    summary.metric_means = {method: _means(audited, method, summary.metrics) for method in methods}
    summary.mean_maps = {method: _class_means(audited, method, out_dir) for method in methods}
    summary.outside_box = _outside_box(audited, methods)
    return summary


def class_of(record: dict[str, Any]) -> tuple[int, str]:
    """The class an image belongs to: its label when it has one, else the model's prediction."""
    if record["label_index"] is not None:
        return record["label_index"], record["label"]
    return record["predicted"]["index"], record["predicted"]["label"]


def _is_wrong(record: dict[str, Any]) -> bool:
    return record["label_index"] != record["predicted"]["index"]


def _metric_names(audited: list[dict[str, Any]], settings: AuditSettings) -> list[str]:
    """The metrics some image has, in the order they were asked for."""
    found = {metric for record in audited for files in record["methods"].values() for metric in files["metrics"]}
    return [metric for metric in settings.metrics_for(has_box=True) if metric in found]


def _confusion(labelled: list[dict[str, Any]]) -> tuple[list[tuple[int, str]], np.ndarray]:
    names = {record["label_index"]: record["label"] for record in labelled}
    names.update({record["predicted"]["index"]: record["predicted"]["label"] for record in labelled})
    classes = sorted(names.items())
    position = {index: row for row, (index, _) in enumerate(classes)}
    counts = np.zeros((len(classes), len(classes)), np.int64)
    for record in labelled:
        counts[position[record["label_index"]], position[record["predicted"]["index"]]] += 1
    return classes, counts


def _means(audited: list[dict[str, Any]], method: str, metrics: list[str]) -> dict[str, float]:
    """Mean of each metric over the images where it is defined (NaN where none is)."""
    means = {}
    for metric in metrics:
        values = [record["methods"][method]["metrics"].get(metric) for record in audited]
        finite = [value for value in values if value is not None and math.isfinite(value)]
        means[metric] = float(np.mean(finite)) if finite else math.nan
    return means


def _class_means(audited: list[dict[str, Any]], method: str, out_dir: Path) -> list[ClassMean]:
    sums: dict[tuple[int, str], np.ndarray] = {}
    counts: dict[tuple[int, str], int] = defaultdict(int)
    for record in audited:
        key = class_of(record)
        maps = np.load(out_dir / record["methods"][method]["map"])
        class_map = maps[record["targets"].index(key[0])].astype(np.float64)
        scale = np.abs(class_map).max()
        if scale > 0:
            sums[key] = sums.get(key, 0) + class_map / scale
            counts[key] += 1
    return [
        ClassMean(index, label, counts[(index, label)], sums[(index, label)] / counts[(index, label)])
        for index, label in sorted(sums)
    ]


def _outside_box(audited: list[dict[str, Any]], methods: list[str]) -> list[Outlier]:
    outliers = []
    for record in audited:
        for method in methods:
            mass = record["methods"][method]["metrics"].get("mass_in_region")
            if mass is not None and math.isfinite(mass) and mass < MOSTLY_OUTSIDE:
                outliers.append(Outlier(record, method, mass))
    return sorted(outliers, key=lambda outlier: outlier.mass_in_box)
