"""One ONNX Runtime session per input shape, for the CUDA provider.

The CUDA provider rebuilds every convolution's cuDNN state whenever a session's input shape differs from its last
run, even for a shape it ran before. Measured on an H100 (onnxruntime-gpu 1.31.1, cuDNN 9, bench/.cache exports):
a MobileNetV3 224x224 ran batches of 64 in 9 ms at a steady shape and 1.1-1.5 s on every change of shape (to 32, to
1, back to 64); a ResNet-50 17 ms against 0.15-0.25 s. An explanation alternates shapes on every call (the batch-1
scoring pass, full batches, a short last batch), so on the GPU it paid seconds per call; a session that only ever
sees one shape never pays after its first run.

Runs whose every feed and output holds one row per image (`rows_aligned`), but for feeds common to all rows (`shared`:
LRP's rule parameters, left as they are), are padded up to a power of two, so a model's sessions stay few (1, 2, 4,
... rows) whatever batch sizes the scheduler merges; other runs (RISE's graph sums over its masks) get a session for
their exact shapes. At most `max_shapes` sessions are kept per graph, least recently used going first. The CPU
provider has no such cost and keeps a single session (engine/session.py).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable, Sequence

import numpy as np
import onnxruntime as ort

MAX_SHAPES = 8


class ShapePinnedSession:
    """Quacks like the ort.InferenceSession it wraps (run, get_inputs, get_outputs, get_providers, get_modelmeta)."""

    def __init__(self, create: Callable[[], ort.InferenceSession], max_shapes: int = MAX_SHAPES) -> None:
        self._create = create
        self.max_shapes = max_shapes
        # Created at once (a model that cannot load fails here), it serves the first shape that runs.
        self._first: ort.InferenceSession | None = create()
        self._sessions: OrderedDict[Hashable, ort.InferenceSession] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def shapes(self) -> list[Hashable]:
        """The shapes that have a session, least recently used first."""
        with self._lock:
            return list(self._sessions)

    def get_inputs(self) -> list:
        return self._any().get_inputs()

    def get_outputs(self) -> list:
        return self._any().get_outputs()

    def get_providers(self) -> list[str]:
        return self._any().get_providers()

    def get_modelmeta(self) -> ort.ModelMetadata:
        return self._any().get_modelmeta()

    def _any(self) -> ort.InferenceSession:
        """A live session of the graph to answer metadata (every shape's session has the same), so that no session
        is kept alive after its shape was dropped."""
        with self._lock:
            return self._first or next(reversed(self._sessions.values()))

    def run(
        self,
        output_names: Sequence[str] | None,
        feed: dict[str, np.ndarray],
        run_options: ort.RunOptions | None = None,
        *,
        rows_aligned: bool = False,
        shared: Collection[str] = (),
    ) -> list[np.ndarray]:
        rows = next((len(array) for name, array in feed.items() if name not in shared), 0) if rows_aligned else 0
        if rows:
            bucket = bucket_rows(rows)
            feed = {name: array if name in shared else padded_rows(array, bucket) for name, array in feed.items()}
        key = tuple(sorted((name, array.shape) for name, array in feed.items()))
        outputs = self._session(key).run(output_names, feed, run_options)
        return [output[:rows] for output in outputs] if rows else outputs

    def _session(self, key: Hashable) -> ort.InferenceSession:
        """The session of `key`, created on first use (under the lock: a second request for a shape being created
        waits for it rather than creating it twice)."""
        with self._lock:
            session = self._sessions.get(key)
            if session is not None:
                self._sessions.move_to_end(key)
                return session
            session, self._first = (self._first or self._create()), None
            self._sessions[key] = session
            if len(self._sessions) > self.max_shapes:
                self._sessions.popitem(last=False)
            return session


def bucket_rows(rows: int) -> int:
    """The power of two at or above `rows`."""
    return 1 << (rows - 1).bit_length()


def padded_rows(array: np.ndarray, rows: int) -> np.ndarray:
    """`array` grown to `rows` rows by repeating its last row (valid inputs, whose outputs the caller drops)."""
    missing = rows - len(array)
    return array if missing <= 0 else np.concatenate([array, np.repeat(array[-1:], missing, axis=0)])
