"""Wire the server together: registry, servicer, health, reflection, signals. One line per concern."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import grpc

from onnxplain.server.api.auth import BearerTokenAuth
from onnxplain.server.api.health import add_health, set_serving
from onnxplain.server.api.inference import add_inference
from onnxplain.server.api.reflection import add_reflection
from onnxplain.server.api.servicer import ExplainServicer
from onnxplain.server.api.tls import add_port
from onnxplain.server.api.tokens import TokenStore
from onnxplain.server.observability.interceptor import ObservabilityInterceptor
from onnxplain.server.observability.metrics import serve_metrics
from onnxplain.server.repository.loader import load_model
from onnxplain.server.repository.registry import ModelRegistry
from onnxplain.server.settings import ServerSettings
from onnxplain.v1 import explain_service_pb2_grpc as pb_grpc

log = logging.getLogger("onnxplain.server")


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

    for status in await loop.run_in_executor(executor, registry.load_latest_versions):
        log.info("model %s version %s: %s %s", status.name, status.version, status.state, status.reason)
    if not stop.is_set():
        await set_serving(health, True)
        print("onnxplain ready", flush=True)

    await stop.wait()
    # Probes see NOT_SERVING at once; new calls are refused, calls in flight get the grace period to finish.
    await health.enter_graceful_shutdown()
    await server.stop(settings.shutdown_grace_s)
    executor.shutdown(wait=True, cancel_futures=True)
    stop_metrics()
