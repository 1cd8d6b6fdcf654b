"""config.yaml parsing: every field optional, every mistake a ConfigError that names the field. A repository is
not trusted: values out of range, NaN and infinities, numbers too long to convert, files too big, links elsewhere,
pipes and devices are refused before they can cost anything."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from onnxplain.server.engine.scheduler import BatchingPolicy
from onnxplain.server.repository.config import (
    MAX_CONFIG_BYTES,
    MAX_LABELS_FILE_BYTES,
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
        ({"max_batch_size": 0}, "max_batch_size must be an integer from 1 to 1024, got 0"),
        ({"labels": ["a"], "labels_file": "x"}, "either labels or labels_file"),
        ({"labels_file": "../../etc/passwd"}, "outside the model folder"),
        ({"dynamic_batching": {"max_delay": 5}}, "unknown key(s) in dynamic_batching: max_delay"),
        ({"dynamic_batching": {"max_queue_delay_microseconds": -1}}, "must be an integer from 0 to 10000000"),
        ({"dynamic_batching": {"max_queue_size": True}}, "dynamic_batching.max_queue_size must be an integer from 1"),
        ({"instance_count": 0}, "instance_count must be an integer from 1 to 64"),
        ({"max_concurrent_explanations": "2"}, "max_concurrent_explanations must be an integer from 1 to 64"),
        # Ranges: what a repository may ask of the server.
        ({"instance_count": 1_000_000}, "instance_count must be an integer from 1 to 64, got 1000000"),
        ({"max_batch_size": 10**9}, "max_batch_size must be an integer from 1 to 1024"),
        ({"dynamic_batching": {"max_batch_size": 4096}}, "dynamic_batching.max_batch_size must be an integer from"),
        ({"dynamic_batching": {"max_queue_size": 10**7}}, "dynamic_batching.max_queue_size must be an integer from"),
        ({"dynamic_batching": {"max_queue_delay_microseconds": 10**12}}, "from 0 to 10000000, got 1000000000000"),
        ({"max_concurrent_explanations": 10**4}, "max_concurrent_explanations must be an integer from 1 to 64"),
        ({"preprocessing": {"resize": [100_000]}}, "preprocessing.resize must be 0 or 1 or 2 positive integers of"),
        ({"preprocessing": {"center_crop": [224, 10**6]}}, "of at most 8192, got [224, 1000000]"),
        ({"preprocessing": {"resize": True}}, "preprocessing.resize must be"),
        # Finite numbers only.
        ({"preprocessing": {"scale": float("nan")}}, "preprocessing.scale must be a finite number above 0"),
        ({"preprocessing": {"scale": float("inf")}}, "preprocessing.scale must be a finite number above 0"),
        ({"preprocessing": {"scale": 1e308}}, "preprocessing.scale must be a finite number above 0 and at most"),
        ({"preprocessing": {"scale": 0}}, "preprocessing.scale must be a finite number above 0"),
        ({"preprocessing": {"scale": -1 / 255}}, "preprocessing.scale must be a finite number above 0"),
        ({"preprocessing": {"scale": 10**400}}, "preprocessing.scale must be a finite number"),
        ({"preprocessing": {"mean": [float("inf"), 0, 0]}}, "preprocessing.mean must be a finite number"),
        ({"preprocessing": {"mean": [0, 0, -1e300]}}, "preprocessing.mean must be a finite number"),
        ({"preprocessing": {"std": [float("nan")]}}, "preprocessing.std must be a finite number"),
        ({"preprocessing": {"std": [1e-30]}}, "preprocessing.std values must be at least 1e-06 in magnitude"),
        ({"load_timeout_s": 0}, "load_timeout_s must be a finite number above 0"),
        ({"load_timeout_s": float("inf")}, "load_timeout_s must be a finite number above 0"),
        ({"memory_budget_mb": 0}, "memory_budget_mb must be an integer from 1 to 1073741824, got 0"),
        ({"memory_budget_mb": 2.5}, "memory_budget_mb must be an integer from 1"),
        # Names and labels.
        ({"output": {"name": 3}}, "output.name must be a tensor name, got 3"),
        ({"input": {"name": ["x"]}}, "input.name must be a tensor name"),
        ({"labels": ["cat", "x" * 5000]}, "labels: label 1 has 5000 characters; at most 1000"),
        ({"labels_file": 5}, "labels_file must be a file name, got 5"),
    ],
)
def test_config_mistakes_name_the_field(tmp_path: Path, raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_model_config(raw, tmp_path)


def test_unparsable_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("preprocessing: [unclosed")
    with pytest.raises(ConfigError, match=r"config\.yaml: cannot be parsed"):
        read_model_config(tmp_path)


def test_echoed_values_are_cut(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_model_config({"preprocessing": {"color": "x" * 100_000}}, tmp_path)
    assert len(str(refused.value)) < 400
    assert "…" in str(refused.value)


def test_the_load_time_limit_is_parsed(tmp_path: Path) -> None:
    assert parse_model_config({"load_timeout_s": 20}, tmp_path).load_timeout_s == 20.0


# ---- the files themselves ------------------------------------------------------------------------------------------


def model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "repository" / "model"
    folder.mkdir(parents=True)
    return folder


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # A 10^100000 literal: converting it would stall; it is refused unconverted, naming its key.
        ("max_batch_size: 1" + "0" * 100_000, "max_batch_size is a number of 100001 characters; numbers may have"),
        # Base 60 (YAML 1.1): the digits of 1:1:1:... take time quadratic in their count to convert.
        ("instance_count: " + ":".join(["1"] * 200_000), "instance_count is a number of 399999 characters"),
        ("preprocessing:\n  scale: 1" + "0" * 400 + ".5", "preprocessing.scale is a number of 403 characters"),
        ("preprocessing:\n  scale: .nan", "preprocessing.scale must be a finite number above 0"),
        ("preprocessing:\n  mean: [.inf, 0, 0]", "preprocessing.mean must be a finite number"),
        ("preprocessing:\n  scale: 1.0e+308", "preprocessing.scale must be a finite number above 0 and at most"),
        ("preprocessing:\n  std: [-.inf]", "preprocessing.std must be a finite number"),
        ("labels: [a, 1" + "0" * 1000 + "]", "labels must be a list of names"),
    ],
)
def test_yaml_numbers_are_checked_before_and_after_conversion(tmp_path: Path, text: str, message: str) -> None:
    folder = model_folder(tmp_path)
    (folder / "config.yaml").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(f"config.yaml: {message}")):
        read_model_config(folder)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"preprocessing": {"scale": NaN}}', "preprocessing.scale must be a finite number"),
        ('{"preprocessing": {"mean": [Infinity, 0, 0]}}', "preprocessing.mean must be a finite number"),
        ('{"max_batch_size": 1' + "0" * 10_000 + "}", "max_batch_size is a number of 10001 characters"),
        ('{"preprocessing": {"scale": 1e999}}', "preprocessing.scale must be a finite number"),
    ],
)
def test_json_numbers_are_checked_too(tmp_path: Path, text: str, message: str) -> None:
    folder = model_folder(tmp_path)
    (folder / "config.json").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(f"config.json: {message}")):
        read_model_config(folder)


def test_a_config_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    folder = model_folder(tmp_path)
    (folder / "config.yaml").write_text("labels:\n" + "  - a\n" * (MAX_CONFIG_BYTES // 6 + 1))
    with pytest.raises(ConfigError, match=re.escape(f"config.yaml is larger than {MAX_CONFIG_BYTES} bytes")):
        read_model_config(folder)


def test_a_config_that_is_a_pipe_is_refused_instead_of_blocking(tmp_path: Path) -> None:
    folder = model_folder(tmp_path)
    os.mkfifo(folder / "config.yaml")
    with pytest.raises(ConfigError, match=re.escape("config.yaml is not a regular file")):
        read_model_config(folder)


def test_a_config_linked_from_outside_the_repository_is_refused(tmp_path: Path) -> None:
    folder = model_folder(tmp_path)
    (tmp_path / "elsewhere.yaml").write_text("secret: [unclosed")
    os.symlink(tmp_path / "elsewhere.yaml", folder / "config.yaml")
    with pytest.raises(ConfigError, match=re.escape("config.yaml is a link to a file outside the model repository")):
        read_model_config(folder)


def test_a_config_shared_inside_the_repository_through_a_link_is_read(tmp_path: Path) -> None:
    folder = model_folder(tmp_path)
    (folder.parent / "shared.yaml").write_text("labels: [a, b]")
    os.symlink(folder.parent / "shared.yaml", folder / "config.yaml")
    assert read_model_config(folder).labels == ("a", "b")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda path: os.mkfifo(path), "labels_file: names.txt is not a regular file"),
        (lambda path: path.write_bytes(b"a\n" * (MAX_LABELS_FILE_BYTES // 2 + 1)), "names.txt is larger than"),
        (lambda path: path.write_bytes(b"caf\xe9\n"), "labels_file is not UTF-8 text"),
    ],
)
def test_a_labels_file_must_be_a_bounded_text_file(tmp_path: Path, make, message: str) -> None:
    folder = model_folder(tmp_path)
    make(folder / "names.txt")
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_model_config({"labels_file": "names.txt"}, folder)
