"""Names from callers or the repository (models, methods, parameters, outputs) as logs and messages echo them:
bounded, so a 1 MiB name cannot become a 1 MiB log line or error message."""

from __future__ import annotations

MAX_SHOWN_NAME = 200


def shortened(text: str, limit: int = MAX_SHOWN_NAME) -> str:
    """At most `limit` characters, then '…' where the text was cut."""
    return text if len(text) <= limit else text[:limit] + "…"
