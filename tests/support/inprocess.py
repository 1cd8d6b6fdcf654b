"""A server inside the test's own process, for tests that steer a method's work through events they hold: the real
servicer, interceptor and executor on an event loop thread of their own, serving a repository on a loopback port.

Methods made for a test are registered for the duration of a `with` block only, so other tests never see them.
Nothing here imports the server's Open Inference Protocol stubs: their `inference` proto package would clash with
tritonclient's in the same test process.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from onnxplain.server.api.servicer import ExplainServicer
from onnxplain.server.methods.base import AttributionMethod
from onnxplain.server.methods.registry import METHODS
from onnxplain.server.observability.interceptor import ObservabilityInterceptor
from onnxplain.server.repository.loader import load_model
from onnxplain.server.repository.registry import ModelRegistry
from onnxplain.server.settings import ServerSettings
from onnxplain.v1 import explain_service_pb2_grpc as pb_grpc


@dataclass
class InProcessServer:
    target: str
    registry: ModelRegistry
    settings: ServerSettings


@contextmanager
def serving_in_process(repository: Path, **settings: Any) -> Iterator[InProcessServer]:
    """Every model of the repository loaded and served until the block ends; `settings` override ServerSettings."""
    config = ServerSettings(model_repository=repository, threads=1, **settings)
    registry = ModelRegistry(repository, lambda source: load_model(source, config))
    registry.load_latest_versions()
    executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="test-worker")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-event-loop", daemon=True)
    thread.start()

    async def start() -> tuple[grpc.aio.Server, int]:
        limit = config.limits.max_message_bytes
        options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
        server = grpc.aio.server(interceptors=[ObservabilityInterceptor()], options=options)
        pb_grpc.add_ExplainServiceServicer_to_server(ExplainServicer(registry, config, executor), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result(60)
    try:
        yield InProcessServer(f"127.0.0.1:{port}", registry, config)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(None), loop).result(60)
        executor.shutdown(wait=True, cancel_futures=True)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(60)
        loop.close()


@contextmanager
def registered(method: AttributionMethod) -> Iterator[AttributionMethod]:
    """The method is known to the server (in this process) while the block runs."""
    METHODS[method.name] = method
    try:
        yield method
    finally:
        del METHODS[method.name]
