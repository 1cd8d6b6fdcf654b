"""Fixtures: a real server on the embedded demo repository, and clients talking to it over loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.servers import RunningServer, start_server

from onnxplain.client import Client
from onnxplain.server.demo import REPOSITORY


@pytest.fixture(scope="session")
def demo_server() -> Iterator[RunningServer]:
    server = start_server(REPOSITORY)
    yield server
    assert server.stop() == 0, "".join(server.output)


@pytest.fixture(scope="session")
def demo_client(demo_server: RunningServer) -> Iterator[Client]:
    with Client(demo_server.target, timeout=60) as client:
        yield client
