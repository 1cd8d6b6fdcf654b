"""What makes an audit resumable: `results.jsonl`, one line per finished image, and files written atomically.

An image counts as done only once its line is in the journal, and the line is written (flushed and fsynced) only
after every file it names is in place. Files are written to a temporary name and renamed over the final one, so a
killed audit leaves at worst a stray temporary file (removed on the next start) or a complete file without a
journal line (overwritten when the image is redone); a torn last line is cut off and its image redone.
"""

from __future__ import annotations

import io
import json
import math
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

JOURNAL_NAME = "results.jsonl"
_TEMPORARY_PREFIX = ".tmp-"


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def read(self) -> list[dict[str, Any]]:
        """The complete lines; a torn last line (a kill mid-write) is cut off so appending starts on a clean line."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        records = []
        for line in complete.splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{self.path}: a damaged line in the middle of the journal: {error}") from None
        if len(complete) < len(data):
            with self.path.open("r+b") as file:
                file.truncate(len(complete))
        return records

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(_without_nan(record), allow_nan=False) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as file:
            file.write(line)
            file.flush()
            os.fsync(file.fileno())


def write_atomically(path: Path, data: bytes) -> None:
    """Readers see the old file or the whole new one, never a part (rename is atomic within a folder)."""
    temporary = path.with_name(f"{_TEMPORARY_PREFIX}{threading.get_ident()}-{path.name}")
    with temporary.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def save_array(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    write_atomically(path, buffer.getvalue())


def remove_temporaries(folder: Path) -> None:
    """Leftovers of a killed run: never named by the journal, so nothing reads them."""
    for path in folder.glob(f"{_TEMPORARY_PREFIX}*"):
        path.unlink(missing_ok=True)


def _without_nan(value: Any) -> Any:
    """NaN (an undefined metric) as null: strict JSON, readable by any tool."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _without_nan(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_nan(item) for item in value]
    return value
