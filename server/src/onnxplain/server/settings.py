"""Server settings: where models live, which device runs them, and the limits that protect the server."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from onnxplain.server.engine.batching import default_batch_memory
from onnxplain.server.engine.derived import default_memory_budget

Device = Literal["auto", "cpu", "cuda"]
# ONNX Runtime optimising a graph of a few GB on a busy machine takes minutes, not hours.
DEFAULT_MODEL_LOAD_TIMEOUT_S = 300.0


class ConfigurationError(Exception):
    """A flag, environment variable or file the server was started with is unusable; `onnxplain serve` prints the
    message and exits."""


@dataclass(frozen=True)
class Limits:
    """Per-request limits; a request beyond one gets INVALID_ARGUMENT naming the limit."""

    max_image_pixels: int = 40_000_000
    max_images_per_request: int = 64
    # Decoded pixels of all a request's encoded images together, so the image limit cannot be multiplied by the count.
    max_request_pixels: int = 160_000_000
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
    # Requests handled at once (decoding, preprocessing, waiting for their runs): the executor the gRPC handlers hand
    # work to. The ONNX Runtime runs themselves go through each model's scheduler (engine/scheduler.py).
    workers: int = 32
    # Memory a perturbation batch may take (inputs plus estimated activations), in bytes; 0 derives it from the
    # memory available at start (see engine/batching.py).
    batch_memory_bytes: int = 0
    # Most images per ONNX Runtime run; 0 picks by provider (engine/batching.py).
    max_batch_size: int = 0
    # Defaults of every model's scheduler (config.yaml overrides them per model): how long a run waits for other
    # requests' rows to share its batch, how many runs may queue before RESOURCE_EXHAUSTED, how many threads run
    # the model's batches.
    batch_delay_us: int = 0
    max_queue_size: int = 256
    instance_count: int = 1
    # Explanations of more than one pass computed at once per model, and how many more may wait for a turn.
    max_concurrent_explanations: int = 2
    max_waiting_explanations: int = 64
    # Connections are closed (GOAWAY) after this long so clients behind L4 balancers reconnect elsewhere; 0: never.
    max_connection_age_ms: int = 0
    # Seconds calls in flight get to finish after SIGTERM (and after a connection's maximum age).
    shutdown_grace_s: float = 10.0
    # Prometheus /metrics over HTTP on host:metrics_port; 0: not served.
    metrics_port: int = 0
    # TLS: the server's PEM certificate chain and key; with a client CA, clients must present a certificate it signed
    # (mutual TLS). The files are re-read when they change (api/tls.py). None: plain text.
    tls_certificate: Path | None = None
    tls_private_key: Path | None = None
    tls_client_ca: Path | None = None
    # Bearer tokens by role (api/tokens.py); with none here or in the environment, auth is off.
    tokens_file: Path | None = None
    # Largest model a version may be: model.onnx plus its external data files.
    max_model_bytes: int = 4 * 1024**3
    # Seconds a model version may take to load (a model's config.yaml may lower it); past it the load is abandoned
    # and the model reported unavailable, so one model cannot keep the others or the server's health waiting.
    model_load_timeout_s: float = DEFAULT_MODEL_LOAD_TIMEOUT_S
    limits: Limits = field(default_factory=Limits)
    # Seconds between the partial maps an ExplainStream sends while a method of many passes runs: often enough that
    # a short deadline still yields one, rare enough that computing them (a fit, for LIME) costs little.
    partial_map_interval_s: float = 0.5
    # Bytes the sessions of derived graphs (backward, CAM and RISE graphs) of all models may hold together; least
    # recently used ones are evicted, a graph that cannot fit is refused. 0: half the machine's (or container's) memory.
    memory_budget_bytes: int = 0

    @property
    def batch_memory(self) -> int:
        return self.batch_memory_bytes or default_batch_memory()

    @property
    def intra_op_threads(self) -> int:
        return self.threads or (os.cpu_count() or 1)

    @property
    def memory_budget(self) -> int:
        return self.memory_budget_bytes or default_memory_budget()
