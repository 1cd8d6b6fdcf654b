"""Batch sizes: the memory budget bounds every batch; on CPUs an explanation's cap follows an image's bytes (inputs
plus activations), so a small model runs bigger batches and a 224x224 model the measured 8; GPUs get their own."""

from __future__ import annotations

import numpy as np
import pytest

from onnxplain.server.demo import REPOSITORY
from onnxplain.server.engine.batching import (
    CPU_BATCH_BYTES,
    CPU_BATCH_CAP,
    CPU_MAX_BATCH,
    CPU_MIN_BATCH,
    GPU_BATCH_CAP,
    batch_size_for,
    default_max_batch,
)
from onnxplain.server.engine.providers import CPU, CUDA
from onnxplain.server.handlers.attribution import batch_size
from onnxplain.server.repository.loader import load_model
from onnxplain.server.repository.registry import ModelRegistry
from onnxplain.server.settings import ServerSettings

MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("bytes_per_image", "expected"),
    [
        (0, CPU_BATCH_CAP),  # unknown: the image cap
        (int(0.2 * MIB), CPU_MAX_BATCH),  # the 28x28 demo
        (CPU_BATCH_BYTES // 40, 40),
        (38 * MIB, CPU_MIN_BATCH),  # MobileNetV3 224x224
        (106 * MIB, CPU_MIN_BATCH),  # ResNet-50 224x224: never below the floor
    ],
)
def test_the_cpu_cap_follows_an_images_bytes(bytes_per_image: int, expected: int) -> None:
    assert default_max_batch([CPU], bytes_per_image) == expected


def test_gpus_keep_their_cap_whatever_the_bytes() -> None:
    assert default_max_batch([CUDA, CPU], int(0.2 * MIB)) == GPU_BATCH_CAP
    assert default_max_batch([CUDA, CPU]) == GPU_BATCH_CAP


def test_the_memory_budget_and_a_fixed_batch_still_bound_the_batch() -> None:
    assert batch_size_for(10 * MIB, 100 * MIB, CPU_MAX_BATCH) == 10
    assert batch_size_for(10 * MIB, 100 * MIB, CPU_MAX_BATCH, fixed_batch=4) == 8
    assert batch_size_for(10 * MIB, 1 * MIB, CPU_MAX_BATCH) == 1


def test_the_demo_models_explanations_run_in_big_batches() -> None:
    """The handler passes the image's bytes: the embedded demo (1x28x28) gets far more than 16 images a batch."""
    settings = ServerSettings(model_repository=REPOSITORY, device="cpu")
    registry = ModelRegistry(settings.model_repository, lambda source: load_model(source, settings))
    registry.load("digits")
    model = registry.get("digits")
    image = np.zeros((1, 28, 28), dtype=np.float32)
    assert batch_size(model, image, settings) > 4 * CPU_BATCH_CAP
