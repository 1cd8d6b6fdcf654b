"""The model registry: which versions exist on disk, which are loaded, and the session each request uses.

Loading happens outside the lock; a reload swaps the new model in atomically, so in-flight requests finish on the
session they started with and a broken new file leaves the old one serving.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from onnxplain.server.errors import FailedPrecondition, NotFound, Unavailable
from onnxplain.server.repository.model import LoadedModel, ModelLoadError, ModelSource

State = Literal["unloaded", "loading", "ready", "unavailable"]
MODEL_FILE = "model.onnx"


@dataclass(frozen=True)
class VersionStatus:
    name: str
    version: str
    state: State
    reason: str = ""


@dataclass
class _Entry:
    source: ModelSource
    state: State = "unloaded"
    reason: str = ""
    model: LoadedModel | None = None


class ModelRegistry:
    def __init__(self, root: Path, loader: Callable[[ModelSource], LoadedModel]) -> None:
        self.root = root
        self._load = loader
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], _Entry] = {}
        self.rescan()

    def rescan(self) -> None:
        """Pick up model versions added on disk; entries whose files vanished are dropped unless loaded."""
        found = {(s.name, s.version): s for s in scan_repository(self.root)}
        with self._lock:
            for key, source in found.items():
                self._entries.setdefault(key, _Entry(source))
            for key in [k for k, e in self._entries.items() if k not in found and e.model is None]:
                del self._entries[key]

    def statuses(self) -> list[VersionStatus]:
        with self._lock:
            entries = sorted(self._entries.values(), key=lambda e: (e.source.name, _version_key(e.source.version)))
            return [_status(e) for e in entries]

    def versions(self, name: str) -> list[str]:
        with self._lock:
            return self._versions(name)

    def status(self, name: str, version: str) -> VersionStatus:
        with self._lock:
            return _status(self._entry(name, version))

    def get(self, name: str, version: str = "") -> LoadedModel:
        """The ready model for a request: the given version, or the latest ready one."""
        with self._lock:
            if not version:
                ready = [e for (n, _), e in self._entries.items() if n == name and e.model is not None]
                if ready:
                    return max(ready, key=lambda e: _version_key(e.source.version)).model
            entry = self._entry(name, version or self._latest(name))
            if entry.model is not None:
                return entry.model
            raise Unavailable(_unavailable_message(entry))

    def load(self, name: str, version: str = "") -> VersionStatus:
        """Load (or reload) a version. On failure an already loaded session keeps serving; a version that was not
        loaded becomes unavailable with the reason. Either way the caller gets FailedPrecondition."""
        self.rescan()
        with self._lock:
            entry = self._entry(name, version or self._latest(name))
            if entry.model is None:
                entry.state = "loading"
        try:
            model = self._load(entry.source)
        except ModelLoadError as error:
            with self._lock:
                kept = entry.model is not None
                if not kept:
                    entry.state, entry.reason = "unavailable", str(error)
            kept_note = "; the previously loaded session keeps serving" if kept else ""
            raise FailedPrecondition(
                f"model {name!r} version {entry.source.version} failed to load: {error}{kept_note}"
            ) from error
        with self._lock:
            entry.model, entry.state, entry.reason = model, "ready", ""
            return _status(entry)

    def unload(self, name: str, version: str = "") -> list[VersionStatus]:
        with self._lock:
            keys = [k for k in self._entries if k[0] == name and (not version or k[1] == version)]
            if not keys:
                self._entry(name, version)  # raises NotFound with the right message
            for key in keys:
                entry = self._entries[key]
                entry.model, entry.state, entry.reason = None, "unloaded", ""
            return [_status(self._entries[k]) for k in keys]

    def load_latest_versions(self) -> list[VersionStatus]:
        """The start-up policy (Triton's default): the latest version of every model. A model that fails is
        recorded as unavailable with its reason; the others still load."""
        with self._lock:
            names = sorted({name for name, _ in self._entries})
        for name in names:
            with contextlib.suppress(FailedPrecondition):
                self.load(name)
        return self.statuses()

    def _entry(self, name: str, version: str) -> _Entry:
        entry = self._entries.get((name, version))
        if entry is not None:
            return entry
        if not any(n == name for n, _ in self._entries):
            known = ", ".join(sorted({n for n, _ in self._entries})) or "none"
            raise NotFound(f"unknown model {name!r}; models in the repository: {known}")
        raise NotFound(f"model {name!r} has no version {version!r}; versions: {', '.join(self._versions(name))}")

    def _latest(self, name: str) -> str:
        versions = self._versions(name)
        if not versions:
            self._entry(name, "")
        return versions[-1]

    def _versions(self, name: str) -> list[str]:
        return sorted((v for n, v in self._entries if n == name), key=_version_key)


def scan_repository(root: Path) -> list[ModelSource]:
    """Every DIR/<name>/<numeric version>/model.onnx below root."""
    if not root.is_dir():
        return []
    sources = []
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            version_dirs = list(model_dir.iterdir())
        except PermissionError:  # e.g. a volume's root-owned lost+found: not a model
            continue
        for version_dir in version_dirs:
            if version_dir.is_dir() and version_dir.name.isdigit() and (version_dir / MODEL_FILE).is_file():
                sources.append(ModelSource(model_dir.name, version_dir.name, version_dir / MODEL_FILE))
    return sources


def _version_key(version: str) -> int:
    return int(version) if version.isdigit() else -1


def _status(entry: _Entry) -> VersionStatus:
    return VersionStatus(entry.source.name, entry.source.version, entry.state, entry.reason)


def _unavailable_message(entry: _Entry) -> str:
    name, version = entry.source.name, entry.source.version
    if entry.state == "unavailable":
        return f"model {name!r} version {version} is unavailable: {entry.reason}"
    if entry.state == "loading":
        return f"model {name!r} version {version} is loading; retry shortly"
    return f"model {name!r} version {version} is not loaded; load it with LoadModel"
