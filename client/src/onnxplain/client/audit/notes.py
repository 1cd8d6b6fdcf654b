"""run.json: what the latest run learnt beside the results (its input problems, what each metric means), so that
--report-only rebuilds the same report without the inputs or the server."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from onnxplain.client.audit.journal import write_atomically
from onnxplain.client.audit.sources import Problem

NOTES_NAME = "run.json"


@dataclass(frozen=True)
class MetricNote:
    description: str
    higher_is_better: bool


@dataclass(frozen=True)
class RunNotes:
    problems: list[Problem] = field(default_factory=list)
    metrics: dict[str, MetricNote] = field(default_factory=dict)


def save_notes(out_dir: Path, notes: RunNotes) -> None:
    write_atomically(out_dir / NOTES_NAME, (json.dumps(asdict(notes), indent=1) + "\n").encode())


def load_notes(out_dir: Path) -> RunNotes:
    path = out_dir / NOTES_NAME
    if not path.exists():
        return RunNotes()
    data = json.loads(path.read_text(encoding="utf-8"))
    return RunNotes(
        problems=[Problem(**problem) for problem in data["problems"]],
        metrics={name: MetricNote(**note) for name, note in data["metrics"].items()},
    )
