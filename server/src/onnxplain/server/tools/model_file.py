"""A model file loaded exactly as the server loads a version (repository/loader.py), with the config.yaml the server
would read beside its version folder, or one the user names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from onnxplain.server.repository.config import CONFIG_NAMES
from onnxplain.server.repository.loader import load_model
from onnxplain.server.repository.model import LoadedModel, ModelSource
from onnxplain.server.repository.registry import MODEL_FILE
from onnxplain.server.settings import ServerSettings


class UsageError(ValueError):
    """The command line asks for something that cannot be checked; the message says what to pass instead."""


@dataclass(frozen=True)
class ConfiguredSource(ModelSource):
    """A model version whose config is read from `config_dir` rather than from beside its version folder."""

    config_dir: Path

    @property
    def model_dir(self) -> Path:
        return self.config_dir


def load(path: Path, config: Path | None, empty_dir: Path) -> tuple[LoadedModel, ServerSettings]:
    """The model as the server would serve it, and the default settings it is served under. A file in a repository
    (DIR/<name>/<version>/model.onnx) keeps its place, so the server's config and link checks apply as they are; any
    other file is checked as a version of its own with no config (`empty_dir`, a folder without one) unless `config`
    names one. ModelLoadError carries the server's reason."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    in_repository = path.name == MODEL_FILE and path.parent.name.isdigit()
    # A repository file keeps its links, which the server checks; a loose file is taken where it really is.
    path = path.absolute() if in_repository else path.resolve()
    if config is not None:
        _check_config_name(config)
    config_dir = config.parent if config is not None else path.parent.parent if in_repository else empty_dir
    if in_repository:
        name, version, repository = path.parent.parent.name, path.parent.name, path.parent.parent.parent
    else:
        name, version, repository = path.stem, "1", path.parent.parent
    settings = ServerSettings(model_repository=repository)
    return load_model(ConfiguredSource(name, version, path, config_dir), settings), settings


def _check_config_name(config: Path) -> None:
    """The server reads a model's config by name; a file it would not read, or read after another, is refused."""
    if not config.is_file():
        raise UsageError(f"{config}: no such file")
    if config.name not in CONFIG_NAMES:
        raise UsageError(f"{config}: the server reads a model's config only from {', '.join(CONFIG_NAMES)}")
    first = next(name for name in CONFIG_NAMES if (config.parent / name).is_file())
    if first != config.name:
        raise UsageError(f"{config}: the server would read {first} beside it instead")
