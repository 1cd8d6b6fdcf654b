"""Wire the server together: registry, servicer, health, reflection, signals. One line per concern."""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor

import grpc

from onnxplain.server.api.health import add_health, set_serving
from onnxplain.server.api.reflection import add_reflection
from onnxplain.server.api.servicer import ExplainServicer
from onnxplain.server.repository.loader import load_model
from onnxplain.server.repository.registry import ModelRegistry
from onnxplain.server.settings import ServerSettings
from onnxplain.v1 import explain_service_pb2_grpc as pb_grpc

log = logging.getLogger("onnxplain.server")
# Seconds in-flight calls get to finish after SIGTERM.
SHUTDOWN_GRACE = 10.0


def channel_options(settings: ServerSettings) -> list[tuple[str, int]]:
    limit = settings.limits.max_message_bytes
    return [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]


async def serve(settings: ServerSettings) -> None:
    """Start, load every model's latest version, report SERVING, and run until SIGTERM/SIGINT."""
    registry = ModelRegistry(settings.model_repository, lambda source: load_model(source, settings))
    executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="onnxplain-worker")
    server = grpc.aio.server(options=channel_options(settings))
    pb_grpc.add_ExplainServiceServicer_to_server(ExplainServicer(registry, settings, executor), server)
    health = await add_health(server)
    add_reflection(server)
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    await server.start()
    # Printed (not logged) so scripts and tests can read the port chosen for --port 0.
    print(f"onnxplain listening on {settings.host}:{port}", flush=True)

    loop = asyncio.get_running_loop()
    for status in await loop.run_in_executor(executor, registry.load_latest_versions):
        log.info("model %s version %s: %s %s", status.name, status.version, status.state, status.reason)
    await set_serving(health, True)
    print("onnxplain ready", flush=True)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await health.enter_graceful_shutdown()
    await server.stop(SHUTDOWN_GRACE)
    executor.shutdown(wait=True, cancel_futures=True)
