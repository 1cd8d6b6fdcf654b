"""Runs the images not yet in the journal through a bounded thread pool and journals each as it finishes.

At most `concurrency` images are in flight, so memory stays flat however many images there are. When the audit
stops (an error no retry cures, or Ctrl-C) the images in flight are finished and journaled first, so no work that
was done is lost; those waiting to retry a call give up at once (they are redone on the next run). Ctrl-C is read
between waits (interrupt.py), so the stop always takes this path, whatever the main thread was doing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from itertools import islice
from pathlib import Path
from typing import Any, TextIO

from onnxplain.client.audit.image_audit import MAPS_FOLDER, OVERLAYS_FOLDER
from onnxplain.client.audit.interrupt import CtrlC
from onnxplain.client.audit.journal import JOURNAL_NAME, Journal, remove_temporaries
from onnxplain.client.audit.progress import ProgressBar
from onnxplain.client.audit.sources import AuditImage

Auditor = Callable[[AuditImage], dict[str, Any]]
"""Audits one image and returns its journal line (image_audit.ImageAuditor)."""

CTRL_C_POLL_SECONDS = 0.2
"""How often the runner looks at Ctrl-C while every image in flight is still running."""


def prepare_output(out_dir: Path) -> Journal:
    """The output folders, cleared of a killed run's temporary files, and the journal."""
    for folder in (out_dir, out_dir / MAPS_FOLDER, out_dir / OVERLAYS_FOLDER):
        folder.mkdir(parents=True, exist_ok=True)
        remove_temporaries(folder)
    return Journal(out_dir / JOURNAL_NAME)


def run_audit(
    auditor: Auditor,
    images: list[AuditImage],
    journal: Journal,
    concurrency: int,
    progress_stream: TextIO | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Audits the images the journal does not hold yet; returns how many this run audited. `stop` is set when the
    audit stops, to end the waits of calls that retry (the auditor's stop event). Ctrl-C stops the audit that way
    and then raises KeyboardInterrupt."""
    done = {record["image"] for record in journal.read()}
    pending = [image for image in images if image.key not in done]
    progress = ProgressBar(total=len(images), done=len(images) - len(pending), stream=progress_stream)
    audited = 0

    def journal_and_count(record: dict[str, Any]) -> None:
        nonlocal audited
        journal.append(record)
        audited += 1
        progress.advance()

    try:
        _run(auditor, pending, concurrency, journal_and_count, stop or threading.Event())
    finally:
        progress.finish()
    return audited


def _run(
    auditor: Auditor,
    images: list[AuditImage],
    concurrency: int,
    on_done: Callable[[dict[str, Any]], None],
    stop: threading.Event,
) -> None:
    """Hands each journal line to on_done as its image finishes; on a failure the images in flight still are."""
    queue = iter(images)
    with CtrlC() as ctrl_c, ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="audit") as pool:
        running = {pool.submit(auditor, image) for image in _take(queue, concurrency)}
        try:
            while running:
                finished, running = wait(running, timeout=CTRL_C_POLL_SECONDS, return_when=FIRST_COMPLETED)
                failure = _deliver(finished, on_done)
                if failure is not None:
                    raise failure
                if ctrl_c.pressed:
                    raise KeyboardInterrupt
                running |= {pool.submit(auditor, image) for image in _take(queue, len(finished))}
        except BaseException:  # an error no retry cures, or Ctrl-C: keep the work in flight, then stop
            stop.set()
            _deliver(wait(running).done, on_done)
            raise


def _deliver(futures: set[Future[dict[str, Any]]], on_done: Callable[[dict[str, Any]], None]) -> BaseException | None:
    """Passes on every result; returns the first failure instead of raising it, so no finished work is dropped."""
    failure = None
    for future in futures:
        error = future.exception()
        if error is None:
            on_done(future.result())
        elif failure is None:
            failure = error
    return failure


def _take(queue: Iterator[AuditImage], count: int) -> list[AuditImage]:
    return list(islice(queue, count))
