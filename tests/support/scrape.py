"""A server's own /metrics, read by tests that must know what the server is doing right now (a call in flight) rather
than guess it from a pause."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def in_flight(metrics_port: int, model: str | None = None) -> float:
    """onnxplain_requests_in_flight of one model, or summed over models: calls the server is serving now (computing
    or waiting for a turn)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "onnxplain_requests_in_flight" and model in (None, sample.labels.get("model"))
    )
