"""Per-model config.yaml / config.json: preprocessing, labels, output kind. Every field is optional."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from onnxplain.server.imaging.spec import ColorOrder, Interpolation, Layout, PreprocessingSpec

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
}
_BATCHING_KEYS = {"max_batch_size", "max_queue_delay_microseconds", "max_queue_size"}
_PREPROCESSING_KEYS = {"resize", "center_crop", "color", "scale", "mean", "std", "layout", "interpolation"}


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


def read_model_config(model_dir: Path) -> ModelConfig:
    """The config beside the model's version folders, or an empty config when there is none."""
    path = next((model_dir / name for name in CONFIG_NAMES if (model_dir / name).is_file()), None)
    if path is None:
        return ModelConfig()
    try:
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise ConfigError(f"{path.name}: cannot be parsed: {error}") from error
    try:
        return parse_model_config(raw or {}, model_dir)
    except ConfigError as error:
        raise ConfigError(f"{path.name}: {error}") from error


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
        output_name=output_section.get("name"),
        input_name=input_section.get("name"),
        layout=layout,
        max_batch_size=_count(section, "max_batch_size", "max_batch_size"),
        batching=BatchingConfig(
            max_batch_size=_count(batching, "max_batch_size", "dynamic_batching.max_batch_size"),
            max_queue_delay_microseconds=_count(
                batching, "max_queue_delay_microseconds", "dynamic_batching.max_queue_delay_microseconds", minimum=0
            ),
            max_queue_size=_count(batching, "max_queue_size", "dynamic_batching.max_queue_size"),
        ),
        instance_count=_count(section, "instance_count", "instance_count"),
        max_concurrent_explanations=_count(section, "max_concurrent_explanations", "max_concurrent_explanations"),
    )


def _count(section: dict, key: str, where: str, minimum: int = 1) -> int | None:
    value = section.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
        kind = "a positive integer" if minimum == 1 else f"an integer of at least {minimum}"
        raise ConfigError(f"{where} must be {kind}, got {value!r}")
    return value


def _preprocessing(raw: Any, input_layout: Layout | None) -> PreprocessingSpec:
    section = _mapping(raw, "preprocessing", _PREPROCESSING_KEYS)
    defaults = PreprocessingSpec()
    spec = PreprocessingSpec(
        resize=_ints(section.get("resize", ()), "preprocessing.resize", (0, 1, 2)),
        center_crop=_ints(section.get("center_crop", ()), "preprocessing.center_crop", (0, 2)),
        color=_choice(section.get("color"), ColorOrder, "preprocessing.color") or defaults.color,
        scale=None if "scale" not in section else _number(section["scale"], "preprocessing.scale"),
        mean=_numbers(section.get("mean", defaults.mean), "preprocessing.mean"),
        std=_numbers(section.get("std", defaults.std), "preprocessing.std"),
        layout=_choice(section.get("layout"), Layout, "preprocessing.layout") or input_layout,
        interpolation=_choice(section.get("interpolation"), Interpolation, "preprocessing.interpolation")
        or defaults.interpolation,
    )
    for name, values in (("mean", spec.mean), ("std", spec.std)):
        if len(values) not in (1, spec.channels):
            raise ConfigError(f"preprocessing.{name} needs 1 or {spec.channels} values, got {len(values)}")
    if any(value == 0 for value in spec.std):
        raise ConfigError("preprocessing.std must not contain 0")
    return spec


def _labels(section: dict, model_dir: Path) -> tuple[str, ...]:
    if "labels" in section and "labels_file" in section:
        raise ConfigError("give either labels or labels_file, not both")
    if "labels_file" in section:
        path = (model_dir / str(section["labels_file"])).resolve()
        if model_dir.resolve() not in path.parents:
            raise ConfigError(f"labels_file {section['labels_file']!r} lies outside the model folder")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise ConfigError(f"labels_file cannot be read: {error}") from error
        return tuple(line.strip() for line in lines if line.strip())
    labels = section.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(label, (str, int)) for label in labels):
        raise ConfigError("labels must be a list of names")
    return tuple(str(label) for label in labels)


def _mapping(raw: Any, where: str, allowed: set[str]) -> dict:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(
            f"unknown key(s) in {where}: {', '.join(map(str, unknown))}; known: {', '.join(sorted(allowed))}"
        )
    return raw


def _choice(value: Any, options: Any, where: str) -> Any:
    if value is None:
        return None
    allowed = get_args(options)
    normalised = value.upper() if options is Layout and isinstance(value, str) else value
    if isinstance(normalised, str) and options is not Layout:
        normalised = normalised.lower()
    if normalised not in allowed:
        raise ConfigError(f"{where} must be one of {', '.join(allowed)}, got {value!r}")
    return normalised


def _ints(value: Any, where: str, lengths: tuple[int, ...]) -> tuple[int, ...]:
    values = (value,) if isinstance(value, int) else tuple(value or ())
    if len(values) not in lengths or not all(isinstance(v, int) and v > 0 for v in values):
        raise ConfigError(f"{where} must be {' or '.join(map(str, lengths))} positive integers, got {value!r}")
    return values


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    return float(value)


def _numbers(value: Any, where: str) -> tuple[float, ...]:
    values = value if isinstance(value, (list, tuple)) else [value]
    return tuple(_number(v, where) for v in values)
