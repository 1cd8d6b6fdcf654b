"""The runner: bounded concurrency, one journal line per image, resume, and no finished work lost on a failure."""

import io
import threading
import time
from pathlib import Path

import pytest

from onnxplain.client.audit.journal import Journal
from onnxplain.client.audit.runner import prepare_output, run_audit
from onnxplain.client.audit.sources import AuditImage


def images(count: int) -> list[AuditImage]:
    return [AuditImage(key=f"{index:03d}.png", path=Path(f"{index:03d}.png")) for index in range(count)]


class FakeAuditor:
    """Sleeps a little per image and records how many images were in flight at once."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.fail_on = fail_on
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.seen: list[str] = []

    def __call__(self, image: AuditImage) -> dict:
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.seen.append(image.key)
        try:
            time.sleep(0.03 if image.key != self.fail_on else 0.005)
            if image.key == self.fail_on:
                raise RuntimeError(f"cannot audit {image.key}")
            return {"image": image.key, "status": "ok"}
        finally:
            with self.lock:
                self.in_flight -= 1


def test_every_image_is_journaled_once_with_at_most_concurrency_in_flight(tmp_path):
    journal = prepare_output(tmp_path)
    auditor = FakeAuditor()
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
    journal = prepare_output(tmp_path)
    auditor = FakeAuditor(fail_on="004.png")
    stop = threading.Event()
    with pytest.raises(RuntimeError, match=r"cannot audit 004\.png"):
        run_audit(auditor, images(40), journal, concurrency=4, progress_stream=io.StringIO(), stop=stop)
    assert stop.is_set()  # calls waiting to be retried are told to give up
    journaled = {line["image"] for line in journal.read()}
    # Everything started, except the failed image, was finished and journaled; nothing new was started.
    assert journaled == set(auditor.seen) - {"004.png"}
    assert len(auditor.seen) <= 4 + 4
    assert auditor.in_flight == 0
