"""Side-by-side timing: the candidates of one row (ours, the limit, the peer) run in interleaved rounds, so a slow
spell on a busy machine hits all of them alike, and each figure is the median of its timed runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from common import Rounds, log


@dataclass(frozen=True)
class Candidate:
    run: Callable[[], object]
    # Before each timed block: lets the previous candidate's idle threads stop spinning (engine.SETTLE_SECONDS).
    settle: Callable[[], None] | None = None
    # Once, untimed, before the rounds: graph builds, allocations and lazy initialisation (default: `run`).
    warm_up: Callable[[], object] | None = None
    # Timed runs per round.
    runs: int = 1


def interleaved(
    label: str, candidates: dict[str, Candidate], repeat: int
) -> tuple[dict[str, float], dict[str, object]]:
    """Median seconds per candidate, and what each candidate's last run returned."""
    for candidate in candidates.values():
        (candidate.warm_up or candidate.run)()
    rounds, results = Rounds(), {}
    for index in range(repeat):
        log(f"{label}: round {index + 1}/{repeat}")
        for key, candidate in candidates.items():
            if candidate.settle is not None:
                candidate.settle()
            for _ in range(candidate.runs):
                results[key] = rounds.time(key, candidate.run)
    return {key: rounds.median(key) for key in candidates}, results
