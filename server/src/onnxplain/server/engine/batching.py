"""Batch sizes from a memory budget, so no request exhausts memory however many passes it asks for."""

from __future__ import annotations

import functools
import os

# Upper bound of the derived budget: past this, bigger batches no longer run faster.
_MAX_DERIVED_BUDGET = 1024 * 1024 * 1024
_FALLBACK_BUDGET = 256 * 1024 * 1024
# Images per run when nothing else caps it. On CPUs, throughput peaks around 8-16 images and falls beyond, as
# activations leave the caches (measured in bench/RESULTS.md); GPUs keep gaining from larger batches.
CPU_BATCH_CAP = 16
GPU_BATCH_CAP = 64


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


def default_max_batch(providers: list[str]) -> int:
    return GPU_BATCH_CAP if providers and providers[0] != "CPUExecutionProvider" else CPU_BATCH_CAP
