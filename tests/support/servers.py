"""Start a real onnxplain server process on a free loopback port, as a user would, and stop it cleanly."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

_LISTENING = re.compile(r"onnxplain listening on [^:]+:(\d+)")


@dataclass
class RunningServer:
    process: subprocess.Popen
    port: int
    output: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def free_port() -> int:
    """A loopback port free right now, for flags that need one up front (--metrics-port, a replica's fixed port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(repository: Path, *extra: str, timeout: float = 120.0) -> RunningServer:
    """Run `onnxplain serve --port 0` and wait until it reports ready."""
    command = [sys.executable, "-m", "onnxplain.client.cli.main", "serve", "--model-repository", str(repository)]
    command += ["--port", "0", "--threads", "1", *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    server = RunningServer(process=process, port=0)
    ready = threading.Event()

    def read_output() -> None:
        for line in process.stdout:
            server.output.append(line)
            match = _LISTENING.search(line)
            if match:
                server.port = int(match.group(1))
            if "onnxplain ready" in line:
                ready.set()

    threading.Thread(target=read_output, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.1):
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError("server did not start:\n" + "".join(server.output))
    return server


def run_cli(*arguments: str) -> subprocess.CompletedProcess:
    """The `onnxplain` command, as a user runs it (the timeout is a ceiling for a whole audit on a busy machine)."""
    command = [sys.executable, "-m", "onnxplain.client.cli.main", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=240)


@contextmanager
def layout_twins_client(repository: Path, torch_model, image_shape: tuple[int, int, int]) -> Iterator:
    """A server holding `cnn` (NCHW) and `cnn_nhwc` (the same weights behind a channels-last input), and a client."""
    from support.models import ChannelsLast, export, write_model

    write_model(repository, "cnn", export(torch_model, (1, *image_shape)))
    write_model(repository, "cnn_nhwc", export(ChannelsLast(torch_model), (1, *image_shape[1:], image_shape[0])))
    with serving_client(repository) as client:
        yield client


@contextmanager
def serving_client(repository: Path) -> Iterator:
    """A server on the repository and a client connected to it; the server stops afterwards."""
    from onnxplain.client import Client

    server = start_server(repository)
    try:
        with Client(server.target, timeout=120) as client:
            yield client
    finally:
        server.stop()


@contextmanager
def running(repository: Path, *extra: str) -> Iterator[RunningServer]:
    """A server on the repository for the block; it must then stop cleanly (its output shows why not)."""
    server = start_server(repository, *extra)
    yield server
    assert server.stop() == 0, "".join(server.output)
