"""Server settings: where models live, which device runs them, and the limits that protect the server."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from onnxplain.server.engine.batching import default_batch_memory

Device = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class Limits:
    """Per-request limits; a request beyond one gets INVALID_ARGUMENT naming the limit."""

    max_image_pixels: int = 40_000_000
    max_images_per_request: int = 64
    max_targets: int = 1000
    max_forward_passes: int = 100_000
    max_message_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True)
class ServerSettings:
    model_repository: Path
    host: str = "127.0.0.1"
    port: int = 50051
    device: Device = "auto"
    device_id: int = 0
    # ONNX Runtime intra-op threads per session; 0 lets the engine pick the number of cores.
    threads: int = 0
    # Concurrent ONNX Runtime runs (the executor the gRPC handlers hand work to).
    workers: int = 2
    # Memory a perturbation batch may take (inputs plus estimated activations), in bytes; 0 derives it from the
    # memory available at start (see engine/batching.py).
    batch_memory_bytes: int = 0
    # Most images per ONNX Runtime run; 0 picks by provider (engine/batching.py).
    max_batch_size: int = 0
    limits: Limits = field(default_factory=Limits)

    @property
    def batch_memory(self) -> int:
        return self.batch_memory_bytes or default_batch_memory()

    @property
    def intra_op_threads(self) -> int:
        return self.threads or (os.cpu_count() or 1)
