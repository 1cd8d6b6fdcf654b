"""config.yaml parsing: every field optional, every mistake a ConfigError that names the field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from onnxplain.server.engine.scheduler import BatchingPolicy
from onnxplain.server.repository.config import (
    BatchingConfig,
    ConfigError,
    ModelConfig,
    parse_model_config,
    read_model_config,
)
from onnxplain.server.repository.loader import batching_policy
from onnxplain.server.settings import ServerSettings


def test_missing_config_is_an_empty_config(tmp_path: Path) -> None:
    assert read_model_config(tmp_path) == ModelConfig()


def test_full_config_is_parsed(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("cat\ndog\n\n")
    raw = {
        "preprocessing": {
            "resize": [256],
            "center_crop": [224, 224],
            "color": "BGR",
            "mean": [1, 2, 3],
            "std": [4, 5, 6],
            "layout": "nhwc",
            "interpolation": "area",
        },
        "labels_file": "labels.txt",
        "output": {"kind": "probabilities", "name": "prob"},
        "max_batch_size": 8,
    }
    config = parse_model_config(raw, tmp_path)
    assert config.preprocessing.resize == (256,)
    assert config.preprocessing.center_crop == (224, 224)
    assert config.preprocessing.color == "bgr"
    assert config.preprocessing.layout == "NHWC"
    assert config.preprocessing.mean == (1.0, 2.0, 3.0)
    assert config.labels == ("cat", "dog")
    assert (config.output_kind, config.output_name, config.max_batch_size) == ("probabilities", "prob", 8)


def test_batching_and_concurrency_are_parsed(tmp_path: Path) -> None:
    raw = {
        "max_batch_size": 8,
        "dynamic_batching": {"max_queue_delay_microseconds": 0, "max_queue_size": 32},
        "instance_count": 2,
        "max_concurrent_explanations": 3,
    }
    config = parse_model_config(raw, tmp_path)
    assert config.batching == BatchingConfig(max_batch_size=None, max_queue_delay_microseconds=0, max_queue_size=32)
    assert (config.instance_count, config.max_concurrent_explanations) == (2, 3)
    settings = ServerSettings(model_repository=tmp_path, batch_delay_us=500, max_queue_size=99)
    # The model's own values first, then its perturbation batch cap, then the server's defaults.
    assert batching_policy(config, settings, ["CPUExecutionProvider"]) == BatchingPolicy(8, 0, 32, 2)
    defaults = batching_policy(parse_model_config({}, tmp_path), settings, ["CPUExecutionProvider"])
    assert defaults == BatchingPolicy(max_batch_size=16, max_queue_delay_us=500, max_queue_size=99, instances=1)


def test_json_config_is_read(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"labels": ["a", "b"], "output": {"kind": "logits"}}')
    assert read_model_config(tmp_path).labels == ("a", "b")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"labelz": []}, "unknown key(s) in the config: labelz"),
        ({"preprocessing": {"colour": "rgb"}}, "unknown key(s) in preprocessing: colour"),
        ({"preprocessing": {"color": "cmyk"}}, "preprocessing.color must be one of"),
        ({"preprocessing": {"resize": [1, 2, 3]}}, "preprocessing.resize"),
        ({"preprocessing": {"std": [0.0]}}, "std must not contain 0"),
        ({"preprocessing": {"mean": [1, 2]}}, "preprocessing.mean needs 1 or 3 values"),
        ({"output": {"kind": "scores"}}, "output.kind must be one of logits, probabilities"),
        ({"max_batch_size": 0}, "max_batch_size must be a positive integer"),
        ({"labels": ["a"], "labels_file": "x"}, "either labels or labels_file"),
        ({"labels_file": "../../etc/passwd"}, "outside the model folder"),
        ({"dynamic_batching": {"max_delay": 5}}, "unknown key(s) in dynamic_batching: max_delay"),
        ({"dynamic_batching": {"max_queue_delay_microseconds": -1}}, "must be an integer of at least 0"),
        ({"dynamic_batching": {"max_queue_size": True}}, "dynamic_batching.max_queue_size must be a positive"),
        ({"instance_count": 0}, "instance_count must be a positive integer"),
        ({"max_concurrent_explanations": "2"}, "max_concurrent_explanations must be a positive integer"),
    ],
)
def test_config_mistakes_name_the_field(tmp_path: Path, raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_model_config(raw, tmp_path)


def test_unparsable_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("preprocessing: [unclosed")
    with pytest.raises(ConfigError, match=r"config\.yaml: cannot be parsed"):
        read_model_config(tmp_path)
