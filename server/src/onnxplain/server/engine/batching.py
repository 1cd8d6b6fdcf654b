"""Batch sizes from a memory budget, so no request exhausts memory however many passes it asks for."""

from __future__ import annotations

import functools
import os

from onnxplain.server.engine.providers import CPU, first_provider

# Upper bound of the derived budget: past this, bigger batches no longer run faster.
_MAX_DERIVED_BUDGET = 1024 * 1024 * 1024
_FALLBACK_BUDGET = 256 * 1024 * 1024
# Images per run when nothing else caps it and an image's bytes are unknown (the scheduler's merges). On CPUs,
# throughput of 224x224 models peaks around 8-16 images and falls beyond, as activations leave the caches (measured
# in bench/RESULTS.md); GPUs keep gaining from larger batches.
CPU_BATCH_CAP = 16
GPU_BATCH_CAP = 64
# An explanation's batch on CPUs is capped in bytes of inputs and activations instead. A small model's forward is
# cheap and the work around each batch is not (masks, blend, the scheduler's hand-over: about 0.3 ms a batch on 2
# cores, against 0.8 ms for 16 forwards of the 28x28 demo), so it gets up to CPU_MAX_BATCH images (the demo: 0.2 MB
# an image); a 224x224 MobileNetV3 (38 MB) gets 8, which ran RISE 9% faster than 16 (474.8 against 521.9 ms for 128
# masks, medians of 5 alternating calls, 2-core EPYC; ResNet-50 1007 against 1018 ms); nothing gets fewer than 8.
CPU_BATCH_BYTES = 8 * 38 * 1024 * 1024
CPU_MIN_BATCH = 8
CPU_MAX_BATCH = 256


def batch_size_for(bytes_per_image: int, memory_budget: int, max_batch: int, fixed_batch: int | None = None) -> int:
    """Largest batch whose inputs and activations fit the budget, at least 1, at most max_batch.

    Models with a fixed batch dimension run in chunks of that size anyway; batches are rounded to a multiple.
    """
    size = max(1, min(max_batch, memory_budget // max(1, bytes_per_image)))
    if fixed_batch:
        size = max(fixed_batch, size - size % fixed_batch)
    return size


@functools.cache
def default_batch_memory() -> int:
    """A quarter of the memory available when first asked, at most 1 GiB: room for concurrent requests."""
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return _FALLBACK_BUDGET
    return max(_FALLBACK_BUDGET // 4, min(_MAX_DERIVED_BUDGET, available // 4))


def default_max_batch(providers: list, bytes_per_image: int = 0) -> int:
    """Images per run on these providers; on CPUs, more for images of fewer bytes (inputs plus activations)."""
    if first_provider(providers) not in (None, CPU):
        return GPU_BATCH_CAP
    if bytes_per_image <= 0:
        return CPU_BATCH_CAP
    return min(CPU_MAX_BATCH, max(CPU_MIN_BATCH, CPU_BATCH_BYTES // bytes_per_image))
