"""The model registry: which versions exist on disk, which are loaded, and the session each request uses.

Loading happens outside the lock; a reload swaps the new model in atomically, so in-flight requests finish on the
session they started with and a broken new file leaves the old one serving.

The repository's folders are not trusted: a folder that is not a version, or a model folder whose name is not
text, is skipped with one log line, never an error every request would meet.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from onnxplain.server.errors import FailedPrecondition, NotFound, OnnxplainError, Unavailable
from onnxplain.server.observability.names import shortened
from onnxplain.server.repository.model import LoadedModel, ModelLoadError, ModelSource

State = Literal["unloaded", "loading", "ready", "unavailable"]
MODEL_FILE = "model.onnx"
# A version folder's name: ASCII digits ('²' and '٣' are str.isdigit() too, and int() refuses the first), few
# enough for an int64 as in Triton.
VERSION_NAME = re.compile(r"[0-9]{1,18}")
# Model versions loaded at once at start: a model that loads slowly (up to its load time limit) holds one turn
# while the others go on; the bound keeps the memory of loads in flight in check.
PARALLEL_LOADS = 4

log = logging.getLogger("onnxplain.server.repository")


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
        # Skipped folders already logged: a rescan (each ListModels, each load) does not log them again.
        self._reported: set[Path] = set()
        self.rescan()

    def rescan(self) -> None:
        """Pick up model versions added on disk; entries whose files vanished are dropped unless loaded."""
        sources, skipped = scan_repository(self.root)
        found = {(s.name, s.version): s for s in sources}
        with self._lock:
            new_skips = [(path, reason) for path, reason in skipped.items() if path not in self._reported]
            self._reported.update(path for path, _ in new_skips)
            for key, source in found.items():
                self._entries.setdefault(key, _Entry(source))
            for key in [k for k, e in self._entries.items() if k not in found and e.model is None]:
                del self._entries[key]
        for path, reason in new_skips:
            log.warning("skipped %s: %s", path, reason)

    def statuses(self) -> list[VersionStatus]:
        with self._lock:
            entries = sorted(self._entries.values(), key=lambda e: (e.source.name, int(e.source.version)))
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
                    return max(ready, key=lambda e: int(e.source.version)).model
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
        recorded as unavailable with its reason; the others still load, PARALLEL_LOADS at a time, so one slow
        model does not hold the others back. The loads run on daemon threads: a process told to stop while this
        waits can exit without them."""
        with self._lock:
            names = deque(sorted({name for name, _ in self._entries}))

        def load_next() -> None:
            while names:
                try:
                    name = names.popleft()
                except IndexError:  # another loader took the last one
                    return
                try:
                    self.load(name)
                except OnnxplainError as error:  # recorded in the model's state; NotFound if its folder vanished
                    log.debug("model %s not loaded: %s", shortened(name), error)

        loaders = [
            threading.Thread(target=load_next, name="onnxplain-loader", daemon=True)
            for _ in range(min(PARALLEL_LOADS, len(names)))
        ]
        for loader in loaders:
            loader.start()
        for loader in loaders:
            loader.join()
        return self.statuses()

    def _entry(self, name: str, version: str) -> _Entry:
        entry = self._entries.get((name, version))
        if entry is not None:
            return entry
        if not any(n == name for n, _ in self._entries):
            known = ", ".join(sorted({n for n, _ in self._entries})) or "none"
            raise NotFound(f"unknown model {shortened(name)!r}; models in the repository: {shortened(known, 2000)}")
        raise NotFound(
            f"model {shortened(name)!r} has no version {shortened(version)!r}; "
            f"versions: {', '.join(self._versions(name))}"
        )

    def _latest(self, name: str) -> str:
        versions = self._versions(name)
        if not versions:
            self._entry(name, "")
        return versions[-1]

    def _versions(self, name: str) -> list[str]:
        return sorted((v for n, v in self._entries if n == name), key=int)


def scan_repository(root: Path) -> tuple[list[ModelSource], dict[Path, str]]:
    """Every DIR/<name>/<version>/model.onnx below root, and the folders skipped with the reason. Hidden folders
    (a leading dot) are skipped silently."""
    if not root.is_dir():
        return [], {}
    sources: list[ModelSource] = []
    skipped: dict[Path, str] = {}
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not _is_text(model_dir.name):
            skipped[model_dir] = "a model's name must be UTF-8 text"
            continue
        try:
            version_dirs = sorted(p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        except PermissionError:  # e.g. a volume's root-owned lost+found: not a model
            continue
        for version_dir in version_dirs:
            if not VERSION_NAME.fullmatch(version_dir.name):
                skipped[version_dir] = "not a version: version folders are named by 1 to 18 digits 0-9"
            elif not (version_dir / MODEL_FILE).is_file():
                skipped[version_dir] = f"the version folder has no {MODEL_FILE}"
            else:
                sources.append(ModelSource(model_dir.name, version_dir.name, version_dir / MODEL_FILE))
    return sources, skipped


def _is_text(name: str) -> bool:
    """Whether a file name decoded from the file system is text: undecodable bytes come back as lone surrogates,
    which no gRPC message can carry."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _status(entry: _Entry) -> VersionStatus:
    return VersionStatus(entry.source.name, entry.source.version, entry.state, entry.reason)


def _unavailable_message(entry: _Entry) -> str:
    name, version = shortened(entry.source.name), entry.source.version
    if entry.state == "unavailable":
        return f"model {name!r} version {version} is unavailable: {entry.reason}"
    if entry.state == "loading":
        return f"model {name!r} version {version} is loading; retry shortly"
    return f"model {name!r} version {version} is not loaded; load it with LoadModel"
