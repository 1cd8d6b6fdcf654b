"""Fixtures: a real server on the embedded demo repository, and clients talking to it over loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.servers import RunningServer, running

from onnxplain.client import Client
from onnxplain.server.demo import REPOSITORY


@pytest.fixture(scope="session")
def demo_server() -> Iterator[RunningServer]:
    with running(REPOSITORY) as server:
        yield server


@pytest.fixture(scope="session")
def demo_client(demo_server: RunningServer) -> Iterator[Client]:
    with Client(demo_server.target, timeout=60) as client:
        yield client
