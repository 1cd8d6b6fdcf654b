"""Per-model config.yaml / config.json: preprocessing, labels, output kind. Every field is optional.

A repository is not trusted more than a request: every value is checked here, before the model loads, and a value
out of range is refused with its key named. Files are bounded before they are read, and numbers before they are
converted (the digits of a YAML base-60 integer take time quadratic in their count: a 1 MB one takes minutes).
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from onnxplain.server.imaging.spec import ColorOrder, Interpolation, Layout, PreprocessingSpec
from onnxplain.server.observability.names import shortened

OutputKind = Literal["logits", "probabilities"]
CONFIG_NAMES = ("config.yaml", "config.yml", "config.json")
_TOP_LEVEL_KEYS = {
    "preprocessing",
    "labels",
    "labels_file",
    "output",
    "input",
    "max_batch_size",
    "dynamic_batching",
    "instance_count",
    "max_concurrent_explanations",
    "load_timeout_s",
    "memory_budget_mb",
}
_BATCHING_KEYS = {"max_batch_size", "max_queue_delay_microseconds", "max_queue_size"}
_PREPROCESSING_KEYS = {"resize", "center_crop", "color", "scale", "mean", "std", "layout", "interpolation"}

# What a config may hold. A config is a few kilobytes even with a thousand labels inline.
MAX_CONFIG_BYTES = 1024 * 1024
MAX_LABELS_FILE_BYTES = 10 * 1024 * 1024
MAX_LABEL_CHARS = 1000
# Longer numbers are refused unconverted (see the module's docstring); 64 characters hold any float's digits.
MAX_NUMBER_CHARS = 64
MAX_IMAGE_SIDE = 8192
MAX_BATCH_SIZE = 1024
MAX_QUEUE_SIZE = 65536
MAX_QUEUE_DELAY_US = 10_000_000
MAX_INSTANCE_COUNT = 64
MAX_CONCURRENT_EXPLANATIONS = 64
MAX_LOAD_TIMEOUT_S = 86400.0
MAX_MEMORY_BUDGET_MB = 2**30  # a petabyte: beyond any machine, within what the budget's byte count holds
# scale, mean and |std| stay within these, so preprocessed pixels are finite float32 values.
MAX_PREPROCESSING_MAGNITUDE = 1e6
MIN_STD_MAGNITUDE = 1e-6


class ConfigError(ValueError):
    """A config file that cannot be used; the model is reported unavailable with this message."""


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_size: int | None = None
    max_queue_delay_microseconds: int | None = None
    max_queue_size: int | None = None


@dataclass(frozen=True)
class ModelConfig:
    preprocessing: PreprocessingSpec | None = None
    labels: tuple[str, ...] = ()
    output_kind: OutputKind | None = None
    output_name: str | None = None
    input_name: str | None = None
    layout: Layout | None = None
    max_batch_size: int | None = None
    # Cross-request batching and concurrency (Triton's names); None: the server's defaults.
    batching: BatchingConfig = BatchingConfig()
    instance_count: int | None = None
    max_concurrent_explanations: int | None = None
    # Seconds the model may take to load; lowers the server's --model-load-timeout-s, never raises it.
    load_timeout_s: float | None = None
    # MiB this model's derived graphs may hold, within the server's --memory-budget; None: only that budget.
    memory_budget_mb: int | None = None


@dataclass(frozen=True)
class LongNumber:
    """A number of more than MAX_NUMBER_CHARS characters, left unconverted: validation refuses it naming its key."""

    characters: int

    def __repr__(self) -> str:
        return f"a number of {self.characters} characters; numbers may have at most {MAX_NUMBER_CHARS}"


def read_model_config(model_dir: Path) -> ModelConfig:
    """The config beside the model's version folders, or an empty config when there is none."""
    path = next((model_dir / name for name in CONFIG_NAMES if (model_dir / name).exists()), None)
    if path is None:
        return ModelConfig()
    try:
        data = read_bounded(path, MAX_CONFIG_BYTES, model_dir.parent, "the model repository")
    except OSError as error:
        raise ConfigError(f"{path.name} cannot be read: {error}") from error
    try:
        text = data.decode("utf-8")
        raw = _parse_json(text) if path.suffix == ".json" else yaml.load(text, Loader=_ConfigLoader)
    except (ValueError, yaml.YAMLError) as error:
        raise ConfigError(f"{path.name}: cannot be parsed: {shortened(str(error), 1000)}") from error
    try:
        return parse_model_config(raw or {}, model_dir)
    except ConfigError as error:
        raise ConfigError(f"{path.name}: {error}") from error


def read_bounded(path: Path, max_bytes: int, folder: Path, folder_role: str) -> bytes:
    """A regular file inside `folder` of at most max_bytes: a link elsewhere would show another file's lines in
    parse errors, and a pipe or a device would block the load or never end."""
    if not path.resolve().is_relative_to(folder.resolve()):
        raise ConfigError(f"{path.name} is a link to a file outside {folder_role}")
    # Non-blocking: a pipe opens at once instead of waiting for a writer, and is then refused.
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise ConfigError(f"{path.name} is not a regular file")
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ConfigError(f"{path.name} is larger than {max_bytes} bytes")
    return data


def parse_model_config(raw: Any, model_dir: Path) -> ModelConfig:
    section = _mapping(raw, "the config", _TOP_LEVEL_KEYS)
    input_section = _mapping(section.get("input", {}), "input", {"name", "layout"})
    output_section = _mapping(section.get("output", {}), "output", {"kind", "name"})
    preprocessing = section.get("preprocessing")
    layout = _choice(input_section.get("layout"), Layout, "input.layout")
    batching = _mapping(section.get("dynamic_batching", {}), "dynamic_batching", _BATCHING_KEYS)
    return ModelConfig(
        preprocessing=None if preprocessing is None else _preprocessing(preprocessing, layout),
        labels=_labels(section, model_dir),
        output_kind=_choice(output_section.get("kind"), OutputKind, "output.kind"),
        output_name=_name(output_section.get("name"), "output.name"),
        input_name=_name(input_section.get("name"), "input.name"),
        layout=layout,
        max_batch_size=_count(section, "max_batch_size", "max_batch_size", maximum=MAX_BATCH_SIZE),
        batching=BatchingConfig(
            max_batch_size=_count(
                batching, "max_batch_size", "dynamic_batching.max_batch_size", maximum=MAX_BATCH_SIZE
            ),
            max_queue_delay_microseconds=_count(
                batching,
                "max_queue_delay_microseconds",
                "dynamic_batching.max_queue_delay_microseconds",
                maximum=MAX_QUEUE_DELAY_US,
                minimum=0,
            ),
            max_queue_size=_count(
                batching, "max_queue_size", "dynamic_batching.max_queue_size", maximum=MAX_QUEUE_SIZE
            ),
        ),
        instance_count=_count(section, "instance_count", "instance_count", maximum=MAX_INSTANCE_COUNT),
        max_concurrent_explanations=_count(
            section, "max_concurrent_explanations", "max_concurrent_explanations", maximum=MAX_CONCURRENT_EXPLANATIONS
        ),
        load_timeout_s=None
        if section.get("load_timeout_s") is None
        else _number(section["load_timeout_s"], "load_timeout_s", 0.0, MAX_LOAD_TIMEOUT_S, low_open=True),
        memory_budget_mb=_count(section, "memory_budget_mb", "memory_budget_mb", maximum=MAX_MEMORY_BUDGET_MB),
    )


def _count(section: dict, key: str, where: str, *, maximum: int, minimum: int = 1) -> int | None:
    value = section.get(key)
    if value is None:
        return None
    if isinstance(value, LongNumber):
        raise ConfigError(f"{where} is {value!r}")
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ConfigError(f"{where} must be an integer from {minimum} to {maximum}, got {_shown(value)}")
    return value


def _preprocessing(raw: Any, input_layout: Layout | None) -> PreprocessingSpec:
    section = _mapping(raw, "preprocessing", _PREPROCESSING_KEYS)
    defaults = PreprocessingSpec()
    spec = PreprocessingSpec(
        resize=_sides(section.get("resize", ()), "preprocessing.resize", (0, 1, 2)),
        center_crop=_sides(section.get("center_crop", ()), "preprocessing.center_crop", (0, 2)),
        color=_choice(section.get("color"), ColorOrder, "preprocessing.color") or defaults.color,
        scale=None
        if "scale" not in section
        else _number(section["scale"], "preprocessing.scale", 0.0, MAX_PREPROCESSING_MAGNITUDE, low_open=True),
        mean=_numbers(section.get("mean", defaults.mean), "preprocessing.mean", MAX_PREPROCESSING_MAGNITUDE),
        std=_numbers(section.get("std", defaults.std), "preprocessing.std", MAX_PREPROCESSING_MAGNITUDE),
        layout=_choice(section.get("layout"), Layout, "preprocessing.layout") or input_layout,
        interpolation=_choice(section.get("interpolation"), Interpolation, "preprocessing.interpolation")
        or defaults.interpolation,
    )
    for name, values in (("mean", spec.mean), ("std", spec.std)):
        if len(values) not in (1, spec.channels):
            raise ConfigError(f"preprocessing.{name} needs 1 or {spec.channels} values, got {len(values)}")
    if any(value == 0 for value in spec.std):
        raise ConfigError("preprocessing.std must not contain 0")
    if any(abs(value) < MIN_STD_MAGNITUDE for value in spec.std):
        raise ConfigError(f"preprocessing.std values must be at least {MIN_STD_MAGNITUDE:g} in magnitude")
    return spec


def _labels(section: dict, model_dir: Path) -> tuple[str, ...]:
    if "labels" in section and "labels_file" in section:
        raise ConfigError("give either labels or labels_file, not both")
    if "labels_file" in section:
        labels = _labels_file(section["labels_file"], model_dir)
        where = "labels_file"
    else:
        labels = section.get("labels", [])
        where = "labels"
        if not isinstance(labels, list) or not all(_is_label(label) for label in labels):
            raise ConfigError("labels must be a list of names")
        labels = [str(label) for label in labels]
    for index, label in enumerate(labels):
        if len(label) > MAX_LABEL_CHARS:
            raise ConfigError(f"{where}: label {index} has {len(label)} characters; at most {MAX_LABEL_CHARS}")
    return tuple(labels)


def _labels_file(name: Any, model_dir: Path) -> list[str]:
    """The file's non-blank lines, stripped."""
    if not isinstance(name, str):
        raise ConfigError(f"labels_file must be a file name, got {_shown(name)}")
    path = model_dir / name
    if model_dir.resolve() not in path.resolve().parents:
        raise ConfigError(f"labels_file {_shown(name)} lies outside the model folder")
    try:
        text = read_bounded(path, MAX_LABELS_FILE_BYTES, model_dir, "the model folder").decode("utf-8")
    except ConfigError as error:
        raise ConfigError(f"labels_file: {error}") from error
    except OSError as error:
        raise ConfigError(f"labels_file cannot be read: {error}") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"labels_file is not UTF-8 text: {error}") from error
    return [line.strip() for line in text.splitlines() if line.strip()]


def _is_label(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _mapping(raw: Any, where: str, allowed: set[str]) -> dict:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__}")
    unknown = sorted(_shown(key) if not isinstance(key, str) else shortened(key) for key in set(raw) - allowed)
    if unknown:
        raise ConfigError(f"unknown key(s) in {where}: {', '.join(unknown[:20])}; known: {', '.join(sorted(allowed))}")
    return raw


def _choice(value: Any, options: Any, where: str) -> Any:
    if value is None:
        return None
    allowed = get_args(options)
    normalised = value.upper() if options is Layout and isinstance(value, str) else value
    if isinstance(normalised, str) and options is not Layout:
        normalised = normalised.lower()
    if normalised not in allowed:
        raise ConfigError(f"{where} must be one of {', '.join(allowed)}, got {_shown(value)}")
    return normalised


def _name(value: Any, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{where} must be a tensor name, got {_shown(value)}")
    return value


def _sides(value: Any, where: str, lengths: tuple[int, ...]) -> tuple[int, ...]:
    """Image sides in pixels: positive and at most MAX_IMAGE_SIDE."""
    values = (value,) if not isinstance(value, (list, tuple)) else tuple(value)
    if len(values) not in lengths or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_IMAGE_SIDE for v in values
    ):
        raise ConfigError(
            f"{where} must be {' or '.join(map(str, lengths))} positive integers of at most {MAX_IMAGE_SIDE}, "
            f"got {_shown(value)}"
        )
    return values


def _number(value: Any, where: str, low: float, high: float, *, low_open: bool = False) -> float:
    """A finite number in [low, high] ((low, high] with low_open): never NaN or infinite."""
    if isinstance(value, LongNumber):
        raise ConfigError(f"{where} is {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where} must be a number, got {_shown(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number) or number < low or number > high or (low_open and number == low):
        bounds = f"above {low:g} and at most {high:g}" if low_open else f"from {low:g} to {high:g}"
        raise ConfigError(f"{where} must be a finite number {bounds}, got {_shown(value)}")
    return number


def _numbers(value: Any, where: str, magnitude: float) -> tuple[float, ...]:
    values = value if isinstance(value, (list, tuple)) else [value]
    return tuple(_number(v, where, -magnitude, magnitude) for v in values)


def _shown(value: Any) -> str:
    return shortened(repr(value))


def _parse_json(text: str) -> Any:
    """json.loads with numbers past MAX_NUMBER_CHARS left unconverted (LongNumber)."""
    return json.loads(text, parse_int=_bounded(int), parse_float=_bounded(float))


def _bounded(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return LongNumber(len(text)) if len(text) > MAX_NUMBER_CHARS else convert(text)

    return parse


_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _ConfigLoader(_SafeLoader):
    """YAML's safe loader (libyaml's when installed: parsing a 1 MB file in pure Python takes seconds), with numbers
    past MAX_NUMBER_CHARS left unconverted (LongNumber)."""


def _bounded_yaml(construct: Callable[[Any, yaml.ScalarNode], Any]) -> Callable[[Any, yaml.ScalarNode], Any]:
    def parse(loader: Any, node: yaml.ScalarNode) -> Any:
        return LongNumber(len(node.value)) if len(node.value) > MAX_NUMBER_CHARS else construct(loader, node)

    return parse


_ConfigLoader.add_constructor("tag:yaml.org,2002:int", _bounded_yaml(_SafeLoader.construct_yaml_int))
_ConfigLoader.add_constructor("tag:yaml.org,2002:float", _bounded_yaml(_SafeLoader.construct_yaml_float))
