"""What a loaded model knows about which methods run on it: the load-time scan of each backward walk
(engine/backward/support.py), then what building and running each method's graphs found.

Metadata must never say a method runs when it does not. The scan finds ops without rules; a graph that a rule or ONNX
Runtime refuses is found when a method first builds it, and is remembered here, so metadata says so from then on and
later calls are refused at once with the same reason.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

NOT_YET_CHECKED = "not yet checked: no rule is missing; the first call builds and runs the method's graphs"


@dataclass
class MethodChecks:
    # Walk (engine/backward/support.py) -> why it cannot run, or None.
    walk_problems: Mapping[str, str | None] = field(default_factory=dict)
    _failed: dict[str, str] = field(default_factory=dict)
    _ran: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def problem(self, method: str, walks: tuple[str, ...]) -> str | None:
        """Why `method`, which needs `walks`, cannot run on the model, or None when nothing says so."""
        with self._lock:
            if method in self._failed:
                return self._failed[method]
        return next((problem for walk in walks if (problem := self.walk_problems.get(walk))), None)

    def checked(self, method: str) -> bool:
        with self._lock:
            return method in self._ran or method in self._failed

    def record_failure(self, method: str, reason: str) -> None:
        with self._lock:
            self._failed[method] = reason

    def record_run(self, method: str) -> None:
        with self._lock:
            self._ran.add(method)
