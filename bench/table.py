"""The one table every row family fills: our time, the limit's, the peer's, their ratios and the target.

Every time is in milliseconds per call (for the throughput rows: per request at steady state, 1 / throughput), the
median of the rounds. A target bounds ours/limit, or ours - limit in milliseconds (the transport rows), and may also
ask that the peer be slower than ours (peer/ours > 1).
"""

from __future__ import annotations

from dataclasses import dataclass

COLUMNS = (
    "#",
    "row",
    "model",
    "work",
    "passes",
    "ours ms",
    "limit ms",
    "peer ms",
    "ours/limit",
    "ours-limit ms",
    "peer/ours",
    "target",
    "met",
    "ms/pass",
    "peer",
    "note",
)


@dataclass(frozen=True)
class Target:
    """What the row must show. `ratio`: ours/limit at most this; `gap_ms`: ours - limit at most this many ms;
    `beat_peer`: peer/ours above 1 (ours is faster)."""

    ratio: float | None = None
    gap_ms: float | None = None
    beat_peer: bool = False

    def text(self) -> str:
        parts = []
        if self.ratio is not None:
            parts.append(f"ours/limit <= {self.ratio:g}")
        if self.gap_ms is not None:
            parts.append(f"ours-limit <= {self.gap_ms:g} ms")
        if self.beat_peer:
            parts.append("peer/ours > 1")
        return ", ".join(parts) or "-"


@dataclass(frozen=True)
class Row:
    family: int
    name: str
    model: str
    work: str
    passes: int  # forward (or forward+backward) passes of one call of ours
    ours: float | None  # seconds; None when our method cannot run on the model (the note says why)
    limit: float | None = None
    peer: float | None = None
    peer_name: str = ""
    target: Target = Target()
    note: str = ""

    def missed(self) -> list[str]:
        """The parts of the target this row misses, by name."""
        if self.ours is None:
            return ["ours"]
        missed = []
        target = self.target
        if target.ratio is not None and self.limit and self.ours / self.limit > target.ratio:
            missed.append("ours/limit")
        if target.gap_ms is not None and self.limit and (self.ours - self.limit) * 1000 > target.gap_ms:
            missed.append("ours-limit")
        if target.beat_peer and self.peer and self.peer <= self.ours:
            missed.append("peer/ours")
        return missed

    def cells(self) -> list[str]:
        ours, limit, peer = self.ours, self.limit, self.peer
        if ours is None:
            limit = peer = None
        if self.target == Target():
            met = "-"
        else:
            missed = self.missed()
            met = "no: " + ", ".join(missed) if missed else "yes"
        return [
            str(self.family),
            self.name,
            self.model,
            self.work,
            str(self.passes),
            _ms(ours),
            _ms(limit),
            _ms(peer),
            "-" if not limit else f"{ours / limit:.3f}",
            "-" if not limit else f"{(ours - limit) * 1000:+.2f}",
            "-" if not peer else f"{peer / ours:.2f}",
            self.target.text(),
            met,
            "-" if not (self.passes and ours) else f"{ours * 1000 / self.passes:.3g}",
            self.peer_name or "-",
            self.note or "-",
        ]


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    milliseconds = seconds * 1000
    return f"{milliseconds:.1f}" if milliseconds >= 10 else f"{milliseconds:.3g}"
