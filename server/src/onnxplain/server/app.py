"""Wire the server together: registry, servicer, health, reflection, signals. One line per concern."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

import grpc

from onnxplain.server.api.auth import BearerTokenAuth
from onnxplain.server.api.health import add_health, set_serving
from onnxplain.server.api.inference import add_inference
from onnxplain.server.api.reflection import add_reflection
from onnxplain.server.api.servicer import ExplainServicer
from onnxplain.server.api.tls import add_port
from onnxplain.server.api.tokens import TokenStore
from onnxplain.server.api.workers import RUNNING
from onnxplain.server.engine.derived import DERIVED_MEMORY
from onnxplain.server.observability.interceptor import ObservabilityInterceptor
from onnxplain.server.observability.metrics import serve_metrics
from onnxplain.server.repository.loader import load_model
from onnxplain.server.repository.registry import ModelRegistry
from onnxplain.server.settings import ConfigurationError, ServerSettings
from onnxplain.v1 import explain_service_pb2_grpc as pb_grpc

log = logging.getLogger("onnxplain.server")

# Seconds work cancelled at the end of the shutdown grace gets to reach its next check (a batch ends, a queue wait
# looks at its token) before the process exits without it.
CANCELLED_WORK_WAIT_S = 2.0


def channel_options(settings: ServerSettings) -> list[tuple[str, int]]:
    limit = settings.limits.max_message_bytes
    options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
    if settings.max_connection_age_ms:
        # GOAWAY after the age; calls in flight get the shutdown grace to finish before the connection closes.
        options += [
            ("grpc.max_connection_age_ms", settings.max_connection_age_ms),
            ("grpc.max_connection_age_grace_ms", int(settings.shutdown_grace_s * 1000)),
        ]
    return options


async def serve(settings: ServerSettings) -> None:
    """Start, load every model's latest version, report SERVING, and run until SIGTERM/SIGINT."""
    _check(settings)
    DERIVED_MEMORY.set_limit(settings.memory_budget)
    registry = ModelRegistry(settings.model_repository, lambda source: load_model(source, settings))
    executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="onnxplain-worker")
    # Observability first (outermost), so calls refused by later interceptors are counted and logged too.
    interceptors = [ObservabilityInterceptor()]
    tokens = TokenStore(settings.tokens_file, os.environ)
    if tokens.enabled:
        interceptors.append(BearerTokenAuth(tokens))
        log.info("bearer-token auth on")
    server = grpc.aio.server(interceptors=interceptors, options=channel_options(settings))
    pb_grpc.add_ExplainServiceServicer_to_server(ExplainServicer(registry, settings, executor), server)
    health = await add_health(server)
    add_inference(server, registry, settings, executor, health)
    add_reflection(server)
    port = add_port(server, settings)
    stop_metrics = serve_metrics(settings.host, settings.metrics_port, registry)
    # Before anything is announced: a SIGTERM during start-up or right after "ready" still shuts down cleanly.
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    # Printed (not logged) so scripts and tests can read the port chosen for --port 0.
    print(f"onnxplain listening on {settings.host}:{port}", flush=True)

    # A SIGTERM while models load stops the server without waiting for the loading to end.
    loading = loop.run_in_executor(executor, registry.load_latest_versions)
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([loading, stopping], return_when=asyncio.FIRST_COMPLETED)
    if loading.done():
        for status in loading.result():
            log.info("model %s version %s: %s %s", status.name, status.version, status.state, status.reason)
        if not stop.is_set():
            await set_serving(health, True)
            print("onnxplain ready", flush=True)

    await stopping
    # Probes see NOT_SERVING at once; new calls are refused, calls in flight get the grace period to finish.
    await health.enter_graceful_shutdown()
    await server.stop(settings.shutdown_grace_s)
    still_running = await _stop_work(executor) + (0 if loading.done() else 1)  # a model load that never ended
    stop_metrics()
    if still_running:
        _exit_without(still_running)


def _check(settings: ServerSettings) -> None:
    if settings.workers < 2:
        raise ConfigurationError("--workers must be at least 2: long explanations may hold only half of them")
    if not settings.partial_map_interval_s >= 0:  # NaN too
        raise ConfigurationError("--partial-map-interval-s must be 0 or more seconds")


async def _stop_work(executor: ThreadPoolExecutor) -> int:
    """Cancel the work of calls still running at the end of the grace (stopping the gRPC server ends the calls, not the
    work they handed to worker threads), and wait a moment for it to end. Returns how many are still running."""
    cancelled = RUNNING.cancel_all()
    if cancelled:
        log.info("shutdown grace over: cancelled the work of %d calls", cancelled)
    executor.shutdown(wait=False, cancel_futures=True)
    return await asyncio.to_thread(RUNNING.wait_ended, CANCELLED_WORK_WAIT_S)


def _exit_without(still_running: int) -> None:
    """Exit now although worker threads still run (work that does not look at its token, a model load that does not
    end): the interpreter would wait for them at exit."""
    log.warning(
        "exiting with %d tasks still running %ss after their cancellation", still_running, CANCELLED_WORK_WAIT_S
    )
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
