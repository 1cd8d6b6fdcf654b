"""What every row family gets: the plan, the in-process engine, the thread count, and fresh repositories for the
servers it starts."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from engine import Engine
from plan import Plan


@dataclass
class Bench:
    plan: Plan
    engine: Engine
    threads: int
    workspace: Path

    def repository(self, name: str) -> Path:
        """An empty model repository for a server of this run."""
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.workspace))
