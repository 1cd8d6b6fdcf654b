"""Batch sizes from a memory budget, so no request exhausts memory however many passes it asks for."""

from __future__ import annotations


def batch_size_for(bytes_per_image: int, memory_budget: int, max_batch: int, fixed_batch: int | None = None) -> int:
    """Largest batch whose inputs and activations fit the budget, at least 1, at most max_batch.

    Models with a fixed batch dimension run in chunks of that size anyway; batches are rounded to a multiple.
    """
    size = max(1, min(max_batch, memory_budget // max(1, bytes_per_image)))
    if fixed_batch:
        size = max(fixed_batch, size - size % fixed_batch)
    return size
