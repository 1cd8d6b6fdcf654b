"""What an audit computes, and `audit.json`, which keeps a resumed run from mixing results of other settings."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from onnxplain.client.audit.journal import write_atomically
from onnxplain.client.parameters import ParameterValue

SETTINGS_NAME = "audit.json"
REGION_METRICS = ("pointing_game", "mass_in_region")
"""Added for images with a box: they measure the map against it."""


@dataclass(frozen=True)
class AuditSettings:
    model: str
    version: str
    methods: tuple[str, ...]
    method_params: dict[str, dict[str, ParameterValue]] = field(default_factory=dict)
    metrics: tuple[str, ...] = ()
    """Empty: no metrics at all (not even the region ones)."""
    metric_params: dict[str, ParameterValue] = field(default_factory=dict)

    def metrics_for(self, has_box: bool) -> list[str]:
        if not self.metrics:
            return []
        extra = [name for name in REGION_METRICS if has_box and name not in self.metrics]
        return [*self.metrics, *extra]

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))


def pin_settings(out_dir: Path, settings: AuditSettings) -> None:
    """Records the settings of a new audit; refuses to resume one made with other settings."""
    path = out_dir / SETTINGS_NAME
    wanted = settings.to_json()
    if path.exists():
        found = json.loads(path.read_text(encoding="utf-8"))
        if found != wanted:
            changed = sorted(key for key in wanted.keys() | found.keys() if wanted.get(key) != found.get(key))
            raise ValueError(
                f"{out_dir} holds an audit with other settings ({', '.join(changed)} differ); "
                "resume it with the same options or choose another --out"
            )
        return
    write_atomically(path, (json.dumps(wanted, indent=2, sort_keys=True) + "\n").encode())


def read_settings(out_dir: Path) -> AuditSettings:
    """The settings an existing audit was made with (for --report-only)."""
    path = out_dir / SETTINGS_NAME
    if not path.exists():
        raise ValueError(f"{out_dir} holds no audit ({SETTINGS_NAME} is missing)")
    data = json.loads(path.read_text(encoding="utf-8"))
    return AuditSettings(
        model=data["model"],
        version=data["version"],
        methods=tuple(data["methods"]),
        method_params=data["method_params"],
        metrics=tuple(data["metrics"]),
        metric_params=data["metric_params"],
    )
