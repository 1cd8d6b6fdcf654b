"""Row 5: throughput of many clients at once, dynamic batching on against off, through a real server.

One server holds the model several times under different config.yaml batching settings: "off" runs every request's
rows alone (dynamic_batching.max_batch_size 1), "on" merges the rows of requests that wait together, up to the CPU
batch cap, waiting up to max_queue_delay_microseconds for more (0: only what already waits). `clients` threads share
one client and call back to back for `window` seconds; a figure is the time per request at steady state (window /
calls completed in it). The limit is a plain forward per image at the best batch size, in this process."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable

from bench_context import Bench
from common import log
from engine import Served, write_model
from live_server import serving
from table import Row, Target

FAMILY = 5
TARGET = Target(beat_peer=True)
OFF = {"dynamic_batching": {"max_batch_size": 1}}
# Calls before the window opens: every thread's first call, connection set-up and queue filling stay out.
RAMP_SECONDS = 0.5


def rows(bench: Bench) -> list[Row]:
    plan = bench.plan
    served = bench.engine.serve(plan.concurrency_model)
    repository = bench.repository("concurrency")
    variants = {f"{served.spec.name}_off": OFF}
    for delay in plan.batch_delays_us:
        variants[f"{served.spec.name}_delay{delay}"] = {"dynamic_batching": {"max_queue_delay_microseconds": delay}}
    path = bench.engine.onnx(served.spec)
    for name, config in variants.items():
        write_model(repository, served.spec, path, name, config)
    calls = {
        "predict": lambda client, name: client.predict(name, served.image),
        "saliency": lambda client, name: client.explain(name, served.image, method="saliency", target=served.target),
    }
    samples: dict[tuple[str, str], list[float]] = {}
    limits = []
    with serving(repository, bench.threads, bench.engine.settings.device) as client:
        for index in range(plan.repeat):
            log(f"{served.label} {plan.clients} clients: round {index + 1}/{plan.repeat}")
            limits.append(per_image_forward(served, plan.clients))
            for call, make in calls.items():
                for name in variants:
                    seconds = per_request(lambda c=client, n=name, m=make: m(c, n), plan.clients, plan.window)
                    samples.setdefault((call, name), []).append(seconds)
    limit = statistics.median(limits)
    results = []
    for call in calls:
        off = statistics.median(samples[call, f"{served.spec.name}_off"])
        for delay in plan.batch_delays_us:
            on = statistics.median(samples[call, f"{served.spec.name}_delay{delay}"])
            results.append(
                Row(
                    FAMILY,
                    f"{call}, batching on, delay {delay} us",
                    served.label,
                    f"{plan.clients} clients",
                    1,
                    on,
                    limit,
                    off,
                    "batching off",
                    TARGET,
                    f"{1 / on:.0f} req/s on, {1 / off:.0f} off; limit: 1 forward per image at batch "
                    f"{served.best_batch()}",
                )
            )
    return results


def per_image_forward(served: Served, images: int) -> float:
    run = served.forwards(images, served.best_batch())
    started = time.perf_counter()
    run()
    return (time.perf_counter() - started) / images


def per_request(call: Callable[[], object], clients: int, window: float) -> float:
    """Seconds per completed call while `clients` threads call back to back."""
    stop = threading.Event()
    finished: list[list[float]] = [[] for _ in range(clients)]
    failures: list[BaseException] = []

    def worker(times: list[float]) -> None:
        try:
            while not stop.is_set():
                call()
                times.append(time.perf_counter())
        except BaseException as error:  # reported after the threads stop
            failures.append(error)

    threads = [threading.Thread(target=worker, args=(times,), daemon=True) for times in finished]
    for thread in threads:
        thread.start()
    time.sleep(RAMP_SECONDS)
    opened = time.perf_counter()
    time.sleep(window)
    closed = time.perf_counter()
    stop.set()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    completed = sum(opened <= t < closed for times in finished for t in times)
    return (closed - opened) / max(completed, 1)
