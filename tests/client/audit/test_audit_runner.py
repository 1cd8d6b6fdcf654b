"""The runner: bounded concurrency, one journal line per image, resume, and no finished work lost on a failure."""

import io
import os
import signal
import threading
from pathlib import Path

import pytest

from onnxplain.client.audit.journal import Journal
from onnxplain.client.audit.runner import prepare_output, run_audit
from onnxplain.client.audit.sources import AuditImage


def images(count: int) -> list[AuditImage]:
    return [AuditImage(key=f"{index:03d}.png", path=Path(f"{index:03d}.png")) for index in range(count)]


class FakeAuditor:
    """Records how many images were in flight at once. No image finishes before `fill` images were in flight
    together, so the most in flight does not depend on how fast the threads start (an event, not a pause); with
    `release`, the images that do not fail also wait for that event."""

    def __init__(self, fill: int = 1, fail_on: str | None = None, release: threading.Event | None = None) -> None:
        self.fail_on = fail_on
        self.release = release
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.seen: list[str] = []
        self.filled = threading.Event()
        self.fill = fill

    def __call__(self, image: AuditImage) -> dict:
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.seen.append(image.key)
            if self.in_flight >= self.fill:
                self.filled.set()
        try:
            assert self.filled.wait(60), f"{self.fill} images were never in flight together"
            if image.key == self.fail_on:
                raise RuntimeError(f"cannot audit {image.key}")
            if self.release is not None:
                assert self.release.wait(60), "the images in flight were never released"
            return {"image": image.key, "status": "ok"}
        finally:
            with self.lock:
                self.in_flight -= 1


def test_every_image_is_journaled_once_with_at_most_concurrency_in_flight(tmp_path):
    journal = prepare_output(tmp_path)
    auditor = FakeAuditor(fill=3)
    progress = io.StringIO()
    assert run_audit(auditor, images(20), journal, concurrency=3, progress_stream=progress) == 20
    keys = [line["image"] for line in journal.read()]
    assert sorted(keys) == [image.key for image in images(20)]
    assert auditor.most_in_flight == 3
    assert progress.getvalue().splitlines()[-1].startswith("[##############################] 20/20 images")
    assert (tmp_path / "maps").is_dir() and (tmp_path / "overlays").is_dir()


def test_a_resumed_run_only_audits_what_the_journal_lacks(tmp_path):
    journal = prepare_output(tmp_path)
    for image in images(5):
        journal.append({"image": image.key, "status": "ok"})
    auditor = FakeAuditor()
    assert run_audit(auditor, images(8), journal, concurrency=2, progress_stream=io.StringIO()) == 3
    assert sorted(auditor.seen) == ["005.png", "006.png", "007.png"]
    assert len(Journal(tmp_path / "results.jsonl").read()) == 8


def test_a_failure_stops_the_audit_but_keeps_the_images_in_flight(tmp_path):
    """The other three images are still in flight when 002 fails: they finish only once the stop is signalled."""
    journal = prepare_output(tmp_path)
    stop = threading.Event()
    auditor = FakeAuditor(fill=4, fail_on="002.png", release=stop)
    with pytest.raises(RuntimeError, match=r"cannot audit 002\.png"):
        run_audit(auditor, images(40), journal, concurrency=4, progress_stream=io.StringIO(), stop=stop)
    assert stop.is_set()  # calls waiting to be retried are told to give up
    journaled = {line["image"] for line in journal.read()}
    # Everything started, except the failed image, was finished and journaled; nothing new was started.
    assert sorted(auditor.seen) == ["000.png", "001.png", "002.png", "003.png"]
    assert journaled == {"000.png", "001.png", "003.png"}
    assert auditor.in_flight == 0


def test_ctrl_c_stops_the_audit_like_a_failure_and_keeps_the_images_in_flight(tmp_path):
    """SIGINT once three images are in flight: they finish (released by the stop) and are journaled, no fourth one
    starts, KeyboardInterrupt comes out of run_audit, and the process's own SIGINT handler is back in place."""
    journal = prepare_output(tmp_path)
    stop = threading.Event()
    auditor = FakeAuditor(fill=3, release=stop)
    handler = signal.getsignal(signal.SIGINT)

    def press_ctrl_c() -> None:
        if auditor.filled.wait(60):
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run_audit(auditor, images(10), journal, concurrency=3, progress_stream=io.StringIO(), stop=stop)
    assert signal.getsignal(signal.SIGINT) is handler
    assert sorted(auditor.seen) == ["000.png", "001.png", "002.png"]
    assert sorted(line["image"] for line in journal.read()) == sorted(auditor.seen)
