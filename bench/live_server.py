"""A real `onnxplain serve` process on a loopback port, as a user starts it (tests/support/servers.py does the same
for the tests), on a repository of its own holding only the models a row family needs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from onnxplain.client import Client

_LISTENING = re.compile(r"onnxplain listening on [^:]+:(\d+)")
START_TIMEOUT = 120.0
CALL_TIMEOUT = 600.0


@contextmanager
def serving(repository: Path, threads: int, device: str) -> Iterator[Client]:
    """A server on `repository` (every model loaded at start) with `threads` ONNX Runtime threads on `device`, and a
    client connected to it; the server stops afterwards."""
    command = [sys.executable, "-m", "onnxplain.client.cli.main", "serve", "--model-repository", str(repository)]
    command += ["--port", "0", "--threads", str(threads), "--device", device, "--log-level", "WARNING"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    port, output, ready = [0], [], threading.Event()

    def read_output() -> None:
        for line in process.stdout:
            output.append(line)
            match = _LISTENING.search(line)
            if match:
                port[0] = int(match.group(1))
            if "onnxplain ready" in line:
                ready.set()

    threading.Thread(target=read_output, daemon=True).start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready.wait(0.1):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start:\n" + "".join(output))
        with Client(f"127.0.0.1:{port[0]}", timeout=CALL_TIMEOUT) as client:
            yield client
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
