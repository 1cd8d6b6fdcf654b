"""Faults: clients that cancel or vanish mid-call, a server killed mid-request while the client's retry policy
reaches a second one, a model file corrupted on disk and reloaded, queues overflowing. Each ends with the server
alive, SERVING, answering a normal Predict, and nothing lost: every slot freed, every accepted call answered.

The long work is RISE on the demo model: 100000 masks per image take about ten seconds of one core, long enough
that "still computing" and "stopped" are told apart by the server's CPU time (/proc/<pid>/stat), measured against a
complete run of a thirty-second of the masks. Nothing is judged by wall-clock time: on a busy machine every wait is
longer, CPU seconds are not. What a server is doing right now is read from its /metrics, not assumed after a pause.
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from support.processes import cpu_of, cpu_until_idle, cpu_until_used
from support.scrape import in_flight
from support.servers import RunningServer, free_port, start_server
from support.waiting import wait_until

from onnxplain.client.channel import channel_options
from onnxplain.server.demo import REPOSITORY, SAMPLES
from onnxplain.v1 import explain_service_pb2 as pb
from onnxplain.v1 import model_pb2
from onnxplain.v1.explain_service_pb2_grpc import ExplainServiceStub

DEMO = "digits"
SAMPLE_PNG = (SAMPLES / "digit_3_clean.png").read_bytes()
SAMPLE_PNGS = [path.read_bytes() for path in sorted(SAMPLES.glob("digit_*.png")) if "mask" not in path.name]
# The most masks the server's default forward-pass limit allows per image: seconds of work per image.
LONG_MASKS = 100_000
# A cancelled call's work stops within a batch: afterwards the server spends less than this share of one long
# explanation's CPU time, where a call that went on would spend nearly all of it.
AFTER_CANCEL_SHARE = 0.5
Healthy = Callable[[RunningServer], None]


def long_explain(images: int = 1) -> pb.ExplainRequest:
    return pb.ExplainRequest(
        model_name=DEMO,
        images=[pb.Image(encoded=SAMPLE_PNG)] * images,
        method="rise",
        parameters={"num_masks": pb.Parameter(integer=LONG_MASKS)},
    )


def predict_request(image: bytes = SAMPLE_PNG) -> pb.PredictRequest:
    return pb.PredictRequest(model_name=DEMO, images=[pb.Image(encoded=image)])


def served_predict(stub: ExplainServiceStub) -> None:
    assert stub.Predict(predict_request(), timeout=60).predictions[0].top[0].label == "three"


def long_explanation_cpu(server: RunningServer) -> float:
    """CPU seconds one long explanation costs this server: 32 times a complete run with a thirty-second of the masks."""
    request = long_explain()
    request.parameters["num_masks"].integer = LONG_MASKS // 32
    with grpc.insecure_channel(server.target) as channel:
        return 32 * cpu_of(server.process.pid, lambda: ExplainServiceStub(channel).Explain(request, timeout=300))


def assert_went_idle(server: RunningServer, long_explanation: float) -> None:
    """The server goes idle having spent a small share of one long explanation after its callers went away."""
    after = cpu_until_idle(server.process.pid)
    assert after < AFTER_CANCEL_SHARE * long_explanation, (
        f"the server kept computing after its callers went away: {after:.1f} CPU s, one long explanation costs "
        f"{long_explanation:.1f}"
    )


def wait_logged(server: RunningServer, rpc: str, count: int) -> None:
    """The server logged exactly `count` finished calls of `rpc` (one JSON line each; read on another thread)."""

    def logged() -> int:
        return sum(f'"rpc": "{rpc}"' in line for line in list(server.output))

    wait_until(lambda: logged() >= count, what=f"{count} {rpc} calls logged by {server.target}")
    assert logged() == count, f"{server.target} logged {logged()} {rpc} calls, expected {count}"


class Stream:
    """A long ExplainStream read on its own thread: first event seen, final status, cancellable from outside."""

    def __init__(self, stub: ExplainServiceStub, request: pb.ExplainRequest, timeout: float = 120) -> None:
        self.call = stub.ExplainStream(pb.ExplainStreamRequest(request=request), timeout=timeout)
        self.first_event = threading.Event()
        self.code: grpc.StatusCode | None = None
        self.ended = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for _ in self.call:
                self.first_event.set()
            self.code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            self.code = error.code()
        self.ended.set()


def assert_explanation_capacity(server: RunningServer, stub: ExplainServiceStub, running: int, waiting: int) -> None:
    """Exactly running + waiting long explanations are admitted (computing or waiting for a turn) and one more is
    refused: no slot was lost to an earlier call. The server's in-flight gauge tells when all of them have arrived;
    the refused one is then the only call that ends (the others compute or wait for minutes). The admitted ones are
    cancelled afterwards."""
    capacity = running + waiting
    streams = [Stream(stub, long_explain()) for _ in range(capacity)]
    try:
        wait_until(
            lambda: (
                sum(s.first_event.is_set() for s in streams) == running
                and in_flight(server.metrics_port, DEMO) == capacity
            ),
            what=f"{running} explanations computing and {capacity} in flight",
        )
        refused = [stream.code for stream in streams if stream.ended.is_set()]
        assert not refused, f"{len(refused)} of {capacity} explanations were not admitted: {refused}"
        streams.append(Stream(stub, long_explain()))

        def ended_once_settled() -> list[Stream]:
            if in_flight(server.metrics_port, DEMO) != capacity:
                return []
            return [stream for stream in streams if stream.ended.is_set()]

        ended = wait_until(ended_once_settled, what="an explanation beyond the capacity refused")
        assert [stream.code for stream in ended] == [grpc.StatusCode.RESOURCE_EXHAUSTED]
    finally:
        for stream in streams:
            stream.call.cancel()
        for stream in streams:
            assert stream.ended.wait(60)


# ---- clients that cancel or vanish -----------------------------------------------------------------------------------

CONCURRENT = 4
WAITING = 4


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    metrics_port = free_port()
    flags = ["--max-concurrent-explanations", str(CONCURRENT), "--max-waiting-explanations", str(WAITING)]
    running = start_server(REPOSITORY, *flags, "--metrics-port", str(metrics_port))
    running.metrics_port = metrics_port
    yield running
    assert running.stop() == 0, "".join(running.output[-60:])


@pytest.fixture(scope="module")
def long_explanation(server: RunningServer) -> float:
    return long_explanation_cpu(server)


@pytest.fixture(scope="module")
def stub(server: RunningServer) -> Iterator[ExplainServiceStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield ExplainServiceStub(channel)


def test_eight_streams_cancelled_at_once_free_the_server(server, stub, long_explanation, healthy: Healthy) -> None:
    """Four streams compute and four wait for a turn; all eight are cancelled together, the running ones after
    their first progress event. The work stops, every slot is free again, and a Predict is served."""
    streams = [Stream(stub, long_explain()) for _ in range(CONCURRENT + WAITING)]
    wait_until(lambda: sum(stream.first_event.is_set() for stream in streams) >= CONCURRENT, what="the running streams")
    assert sum(stream.first_event.is_set() for stream in streams) == CONCURRENT, "the running streams reported"
    for stream in streams:
        stream.call.cancel()
    for stream in streams:
        assert stream.ended.wait(60)
        assert stream.code is grpc.StatusCode.CANCELLED, stream.code

    served_predict(stub)
    assert_went_idle(server, long_explanation)
    assert_explanation_capacity(server, stub, CONCURRENT, WAITING)
    assert_went_idle(server, long_explanation)
    healthy(server)


VANISHING_CLIENT = textwrap.dedent(
    """
    import sys
    import grpc
    from onnxplain.v1 import explain_service_pb2 as pb
    from onnxplain.v1.explain_service_pb2_grpc import ExplainServiceStub

    target, image, masks = sys.argv[1], open(sys.argv[2], "rb").read(), int(sys.argv[3])
    request = pb.ExplainRequest(
        model_name="digits",
        images=[pb.Image(encoded=image)] * 2,
        method="rise",
        parameters={"num_masks": pb.Parameter(integer=masks)},
    )
    print("calling", flush=True)
    ExplainServiceStub(grpc.insecure_channel(target)).Explain(request)  # no deadline: only its death ends the call
    """
)


def test_a_client_killed_mid_call_stops_its_work(server, stub, long_explanation, healthy: Healthy) -> None:
    """A client process starts twenty seconds of work without a deadline and is SIGKILLed: its connection drops,
    the server cancels the call, goes idle and keeps serving."""
    image = SAMPLES / "digit_3_clean.png"
    client = subprocess.Popen(
        [sys.executable, "-c", VANISHING_CLIENT, server.target, str(image), str(LONG_MASKS)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout.readline().strip() == "calling"
        # The explanation is computing once the idle server has spent a twentieth of one long explanation.
        cpu_until_used(server.process.pid, long_explanation / 20)
    finally:
        client.send_signal(signal.SIGKILL)
        client.wait(60)

    served_predict(stub)
    assert_went_idle(server, long_explanation)
    assert_explanation_capacity(server, stub, CONCURRENT, WAITING)
    healthy(server)


# ---- a server killed mid-request; the client's retry policy reaches a second one -------------------------------------

# About a second of work: still running when its server is killed half a second in.
RETRIED_EXPLAIN = pb.ExplainRequest(
    model_name=DEMO,
    images=[pb.Image(encoded=SAMPLE_PNG)],
    method="rise",
    parameters={"num_masks": pb.Parameter(integer=10_000)},
)


def retrying_channel(targets: list[str]) -> grpc.Channel:
    """One channel over several servers with the client library's own retry policy: pick_first uses the first that
    answers, and an idempotent call that gets UNAVAILABLE is sent again, with backoff, to the next one."""
    return grpc.insecure_channel("ipv4:" + ",".join(targets), options=channel_options(load_balancing="pick_first"))


def test_a_server_killed_mid_request_and_the_retry_policy_reaching_the_second(healthy: Healthy) -> None:
    """SIGKILL the first server while a unary Explain and an ExplainStream run on it. The unary call, idempotent and
    not yet answered, is sent again by the channel's policy and answered by the second server; the stream had
    already delivered progress, so it cannot be replayed and fails UNAVAILABLE. Later calls all succeed on the
    second server, and the test code never retries."""
    metrics_port = free_port()
    first, second = start_server(REPOSITORY, "--metrics-port", str(metrics_port)), start_server(REPOSITORY)
    try:
        with retrying_channel([first.target, second.target]) as channel:
            stub = ExplainServiceStub(channel)
            before = stub.Predict(predict_request(), timeout=30).predictions[0].scores.data
            wait_logged(first, "Predict", 1)  # pick_first: the first address serves while it lives

            streaming = Stream(stub, long_explain(images=2))
            assert streaming.first_event.wait(120), "the stream started on the first server"
            unary: dict[str, object] = {}

            def explain() -> None:
                try:
                    unary["response"] = stub.Explain(RETRIED_EXPLAIN, timeout=120)
                except grpc.RpcError as error:
                    unary["error"] = f"{error.code().name}: {error.details()}"

            unary_call = threading.Thread(target=explain)
            unary_call.start()
            wait_until(lambda: in_flight(metrics_port) == 2, what="both calls in flight on the first server")
            first.process.send_signal(signal.SIGKILL)
            unary_call.join(120)

            assert streaming.ended.wait(60)
            assert streaming.code is grpc.StatusCode.UNAVAILABLE, streaming.code
            assert "response" in unary, f"the unary call in flight was not retried: {unary.get('error')}"
            wait_logged(second, "Explain", 1)
            # The second server computed it in full: the same seeded masks give the same maps.
            again = stub.Explain(RETRIED_EXPLAIN, timeout=60)
            assert unary["response"].explanations[0].attributions[0].attribution.data == (
                again.explanations[0].attributions[0].attribution.data
            )

            for image in SAMPLE_PNGS * 3:
                assert stub.Predict(predict_request(image), timeout=30).predictions[0].scores.data
            assert stub.Predict(predict_request(), timeout=30).predictions[0].scores.data == before
        wait_logged(second, "Predict", len(SAMPLE_PNGS) * 3 + 1)
        healthy(second)
    finally:
        first.stop()
        assert second.stop() == 0, "".join(second.output[-60:])


# ---- a model file corrupted on disk and reloaded ---------------------------------------------------------------------

MODEL_BYTES = (REPOSITORY / DEMO / "1" / "model.onnx").read_bytes()
CORRUPTIONS = {
    "random-bytes": random.Random(0).randbytes(len(MODEL_BYTES)),
    "truncated": MODEL_BYTES[: len(MODEL_BYTES) // 3],
    "empty": b"",
}


@pytest.fixture(scope="module")
def copied_repository(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, RunningServer]]:
    root = tmp_path_factory.mktemp("repository")
    shutil.copytree(REPOSITORY / DEMO, root / DEMO)
    running = start_server(root)
    yield root, running
    assert running.stop() == 0, "".join(running.output[-60:])


def scores(stub: ExplainServiceStub) -> list[np.ndarray]:
    response = stub.Predict(pb.PredictRequest(model_name=DEMO, images=[pb.Image(encoded=png) for png in SAMPLE_PNGS]))
    return [np.frombuffer(prediction.scores.data, dtype="<f4") for prediction in response.predictions]


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_model_file_corrupted_on_disk_keeps_the_loaded_session_serving_until_restored(
    copied_repository, healthy: Healthy, corruption: str
) -> None:
    root, server = copied_repository
    model_file = root / DEMO / "1" / "model.onnx"
    with grpc.insecure_channel(server.target) as channel:
        stub = ExplainServiceStub(channel)
        before = scores(stub)
        # Predictions keep flowing during the failed reload; none may fail.
        stop, failures, served = threading.Event(), [], [0]

        def predict_meanwhile() -> None:
            while not stop.is_set():
                try:
                    stub.Predict(predict_request(), timeout=30)
                    served[0] += 1
                except grpc.RpcError as error:
                    failures.append(f"{error.code().name}: {error.details()}")

        background = threading.Thread(target=predict_meanwhile)
        background.start()
        try:
            model_file.write_bytes(CORRUPTIONS[corruption])
            with pytest.raises(grpc.RpcError) as caught:
                stub.ReloadModel(pb.ReloadModelRequest(model_name=DEMO), timeout=60)
            served_at_reload = served[0]
            wait_until(lambda: served[0] > served_at_reload or failures, what="a prediction after the failed reload")
        finally:
            stop.set()
            background.join()
        error = caught.value
        assert error.code() is grpc.StatusCode.FAILED_PRECONDITION, f"{error.code().name}: {error.details()}"
        assert "'digits'" in error.details() and "previously loaded session keeps serving" in error.details()
        assert not failures and served[0] > 0, failures[:3]
        for old, now in zip(before, scores(stub), strict=True):
            np.testing.assert_array_equal(now, old)
        status = next(s for s in stub.ListModels(pb.ListModelsRequest()).models if s.name == DEMO)
        assert (status.state, status.reason) == (model_pb2.MODEL_STATE_READY, "")

        model_file.write_bytes(MODEL_BYTES)
        reloaded = stub.ReloadModel(pb.ReloadModelRequest(model_name=DEMO), timeout=30).status
        assert reloaded.state == model_pb2.MODEL_STATE_READY
        for old, now in zip(before, scores(stub), strict=True):
            np.testing.assert_array_equal(now, old)
    healthy(server)


# ---- queues overflowing ----------------------------------------------------------------------------------------------

OVERFLOW_EXPLAINS = 32
OVERFLOW_PREDICTS = 64
OVERFLOW_CALLS = [
    *(("explain", "occlusion" if index % 2 else "rise") for index in range(OVERFLOW_EXPLAINS)),
    *(("predict", "") for _ in range(OVERFLOW_PREDICTS)),
]
OVERFLOW_PARAMETERS = {
    "occlusion": {"window": pb.Parameter(integer=2), "stride": pb.Parameter(integer=1)},
    "rise": {"num_masks": pb.Parameter(integer=2000)},
}


def test_overflowing_queues_refuse_at_once_and_serve_everything_they_accept(healthy: Healthy) -> None:
    """One explanation computes, one waits, two runs queue per model: a burst of 96 calls gets some answers and some
    RESOURCE_EXHAUSTED refusals naming the queue, and nothing else; afterwards both kinds are served."""
    flags = ["--max-queue-size", "2", "--max-concurrent-explanations", "1", "--max-waiting-explanations", "1"]
    server = start_server(REPOSITORY, *flags)
    channels = [grpc.insecure_channel(server.target) for _ in range(4)]
    stubs = [ExplainServiceStub(channel) for channel in channels]
    start = threading.Barrier(len(OVERFLOW_CALLS))

    def call(index: int) -> tuple[str, grpc.StatusCode, str]:
        kind, method = OVERFLOW_CALLS[index]
        stub = stubs[index % len(stubs)]
        start.wait()
        try:
            if kind == "predict":
                stub.Predict(predict_request(SAMPLE_PNGS[index % len(SAMPLE_PNGS)]), timeout=300)
            else:
                request = pb.ExplainRequest(
                    model_name=DEMO,
                    images=[pb.Image(encoded=SAMPLE_PNG)],
                    method=method,
                    parameters=OVERFLOW_PARAMETERS[method],
                )
                stub.Explain(request, timeout=300)
            code, details = grpc.StatusCode.OK, ""
        except grpc.RpcError as error:
            code, details = error.code(), error.details()
        return kind, code, details

    try:
        with ThreadPoolExecutor(len(OVERFLOW_CALLS)) as pool:
            outcomes = list(pool.map(call, range(len(OVERFLOW_CALLS))))
        codes = {(kind, code.name) for kind, code, _ in outcomes}
        others = [o for o in outcomes if o[1] not in (grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED)]
        assert not others, f"accepted calls failed: {others[:3]}"
        # 32 explanations for one slot and one wait: most are refused at once; an admitted one is never refused
        # half-way (its runs pass a full run queue), so explanations and predictions are both served.
        assert ("explain", "RESOURCE_EXHAUSTED") in codes and ("predict", "OK") in codes, codes
        assert ("explain", "OK") in codes, codes
        refusal = next(o for o in outcomes if o[1] is grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert "try again" in refusal[2] or "queue" in refusal[2], refusal[2]
        counts = {
            kind: sum(o[0] == kind and o[1] is grpc.StatusCode.OK for o in outcomes) for kind in ("explain", "predict")
        }
        print(f"\noverflow: {counts} served, {sum(o[1] is not grpc.StatusCode.OK for o in outcomes)} refused")

        # Afterwards the limits have room again: a normal explanation and predictions are served.
        stubs[0].Explain(
            pb.ExplainRequest(model_name=DEMO, images=[pb.Image(encoded=SAMPLE_PNG)], method="occlusion"), timeout=60
        )
        served_predict(stubs[0])
        healthy(server)
    finally:
        for channel in channels:
            channel.close()
        assert server.stop() == 0, "".join(server.output[-60:])
