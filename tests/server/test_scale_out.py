"""Scale-out on one machine: three server processes behind one client target, as three pods behind a headless
Service are. One client spreads its calls over all of them (round_robin); when a replica dies with calls in flight,
those calls are retried on the others (the client's retry policy for UNAVAILABLE), and without the policy they fail.

A third way to balance, for clients that keep gRPC's pick_first behind an L4 balancer (a ClusterIP Service):
the servers' --max-connection-age-ms closes each connection after a while, and the reconnection lands on another
replica.

Who served a call is read from each server's own request log (one JSON line per finished call), and whether the
dying replica had calls in flight from its own /metrics, never from the client's side of the story.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import grpc
import pytest
from support.scrape import in_flight
from support.servers import RunningServer, free_port, start_server
from support.waiting import wait_until

from onnxplain.client import Client, OnnxplainError
from onnxplain.server.demo import REPOSITORY, SAMPLES

PNG = (SAMPLES / "digit_3_clean.png").read_bytes()
DIGIT = 3
# RISE with this many masks takes a few hundred milliseconds here: long enough to be caught in flight.
SLOW_EXPLANATION = {"method": "rise", "num_masks": 4000, "seed": 1}
# Without a connection age, this many calls all stay on one replica.
UNBALANCED_CALLS = 60
CALLS_CEILING_S = 120


@contextmanager
def running_replicas(*arguments: tuple[str, ...]) -> Iterator[list[RunningServer]]:
    """One server per tuple of extra flags, started side by side (a start is mostly imports and a model load), all
    stopped afterwards; if one fails to start, the others are stopped too."""
    with ThreadPoolExecutor(len(arguments)) as pool:
        futures = [pool.submit(start_server, REPOSITORY, "--log-format", "json", *extra) for extra in arguments]
    servers = [future.result() for future in futures if future.exception() is None]
    try:
        for future in futures:
            future.result()
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def replicas() -> Iterator[list[RunningServer]]:
    """Three servers on the demo repository; the first also serves /metrics (it is the one that dies)."""
    metrics_port = free_port()
    with running_replicas(("--metrics-port", str(metrics_port)), (), ()) as servers:
        servers[0].metrics_port = metrics_port
        yield servers


def balanced_target(servers: list[RunningServer]) -> str:
    """One gRPC target naming every replica, as DNS of a headless Service would."""
    return "ipv4:" + ",".join(server.target for server in servers)


def served(server: RunningServer, rpc: str) -> int:
    """Calls of `rpc` the server finished with OK, from its JSON request log."""
    records = (json.loads(line) for line in list(server.output) if line.startswith("{"))
    return sum(record.get("rpc") == rpc and record.get("code") == "OK" for record in records)


def served_once_logged(servers: list[RunningServer], rpc: str, total: int) -> list[int]:
    """Per-server counts, once the log lines (read by background threads) add up to `total`."""

    def counts() -> list[int] | None:
        found = [served(server, rpc) for server in servers]
        return found if sum(found) >= total else None

    return wait_until(counts, what=f"{total} {rpc} calls logged")


def kill_while_busy(victim: RunningServer, client: Client, calls: int, workers: int) -> list[BaseException | None]:
    """Send `calls` slow explanations from `workers` threads, SIGKILL the victim as soon as it has one in flight,
    and return each call's error (None for success)."""

    def explain(_: int) -> BaseException | None:
        try:
            assert client.explain("digits", PNG, **SLOW_EXPLANATION).attribution.shape[-2:] == (28, 28)
        except OnnxplainError as error:
            return error
        return None

    killed = threading.Event()

    def kill_when_busy() -> None:
        try:
            wait_until(lambda: in_flight(victim.metrics_port) >= 1, what="a call in flight on the victim")
        finally:
            victim.process.kill()
        victim.process.wait()
        killed.set()

    killer = threading.Thread(target=kill_when_busy)
    killer.start()
    with ThreadPoolExecutor(workers) as pool:
        errors = list(pool.map(explain, range(calls)))
    killer.join()
    assert killed.is_set()
    return errors


def test_round_robin_gives_every_replica_a_fair_share_where_pick_first_keeps_one(replicas):
    calls = 300
    with Client(balanced_target(replicas), timeout=30) as client:
        for _ in range(calls):
            assert client.predict("digits", PNG).class_index == DIGIT
    counts = served_once_logged(replicas, "Predict", calls)
    assert sum(counts) == calls
    assert min(counts) >= 0.2 * calls, counts

    # The contrast that gives the fair share its meaning: gRPC's default policy does not spread at all.
    with Client(balanced_target(replicas), timeout=30, load_balancing="pick_first") as client:
        for _ in range(60):
            client.predict("digits", PNG)
    totals = served_once_logged(replicas, "Predict", calls + 60)
    added = [after - before for after, before in zip(totals, counts, strict=True)]
    assert sorted(added) == [0, 0, 60], added


def test_calls_survive_a_replica_killed_mid_call(replicas):
    victim, survivors = replicas[0], replicas[1:]
    with Client(balanced_target(replicas), timeout=60) as client:
        errors = kill_while_busy(victim, client, calls=18, workers=6)
        assert errors == [None] * 18
        before = [served(server, "Predict") for server in survivors]
        for _ in range(100):
            assert client.predict("digits", PNG).class_index == DIGIT
    after = served_once_logged(survivors, "Predict", sum(before) + 100)
    assert sum(after) - sum(before) == 100
    # Every explanation finished exactly once: the victim's interrupted ones were finished by the survivors.
    assert served(victim, "Explain") + sum(served(server, "Explain") for server in survivors) == 18


def test_without_retries_calls_in_flight_on_a_killed_replica_fail(replicas):
    """The retry policy is what saves the test above: without it the calls the victim held come back UNAVAILABLE."""
    with Client(balanced_target(replicas), timeout=60, retries=False) as client:
        errors = kill_while_busy(replicas[0], client, calls=18, workers=6)
    failures = [error for error in errors if error is not None]
    assert failures
    assert {error.code for error in failures} == {grpc.StatusCode.UNAVAILABLE}


class ConnectionBalancer:
    """An L4 balancer like kube-proxy behind a ClusterIP Service: each new TCP connection goes to the next backend,
    and stays there for as long as it lives."""

    def __init__(self, backends: list[RunningServer]) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.target = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._backends = itertools.cycle([server.port for server in backends])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", next(self._backends)))
            for source, sink in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()

    def close(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy bytes one way until either side closes, then close both (the other direction's pump then stops)."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        source.close()
        sink.close()


@pytest.mark.parametrize("max_connection_age_ms", [0, 200])
def test_max_connection_age_rebalances_pick_first_clients_behind_an_l4_balancer(max_connection_age_ms):
    """Calls go on until every replica has served one (with an age) or for a fixed count (without one): a number of
    calls, not a span of time, which a busy machine would fill with fewer of them."""
    extra = ("--max-connection-age-ms", str(max_connection_age_ms))
    calls = 0
    with running_replicas(extra, extra, extra) as servers:
        balancer = ConnectionBalancer(servers)

        def done() -> bool:
            if max_connection_age_ms:
                return all(served(server, "Predict") for server in servers)
            return calls >= UNBALANCED_CALLS

        try:
            with Client(balancer.target, timeout=30, load_balancing="pick_first") as client:
                deadline = time.monotonic() + CALLS_CEILING_S
                while not done():
                    assert time.monotonic() < deadline, f"after {calls} calls, not every replica has served one"
                    assert client.predict("digits", PNG).class_index == DIGIT
                    calls += 1
                    time.sleep(0.01)
        finally:
            balancer.close()
        counts = served_once_logged(servers, "Predict", calls)
    assert sum(counts) == calls
    # Without an age the one connection, and every call, stays on the first replica; with one, each reconnection
    # moves on to the next replica.
    assert sum(count > 0 for count in counts) == (3 if max_connection_age_ms else 1), counts
