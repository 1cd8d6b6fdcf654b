"""Cheap change detection for files the server re-reads while running (TLS certificates, the tokens file)."""

from __future__ import annotations

import os
from pathlib import Path

FileStamp = tuple[int, int, int] | None


def file_stamp(path: Path) -> FileStamp:
    """Inode, size and modification time, or None when the file is missing. The inode catches an atomic replacement
    (rename, a Kubernetes secret's symlink swap) even within one timestamp tick."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_ino, status.st_size, status.st_mtime_ns
