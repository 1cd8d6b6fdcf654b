"""Sessions for graphs derived from a served model (RISE in one graph; later, backward graphs).

A method describes a derived graph by a hashable key and a builder that turns the model's full graph into it. The
graph is built and its session created once per key, under the main session's options and providers, and shared
by every request, like the main session. The model file is read again, with its external data, only when a new key
is built: holding the full graph in memory for the model's lifetime would double what a large model costs.

Derived sessions keep the main session's options. Each session owns a thread pool, and a request often runs two
sessions back to back (a gradient method: the scoring forward on the main session, then the backward session).
Idle threads that spun on after a run competed with the next session's threads for the cores: on 2 cores a RISE
graph batch ran 93 ms right after a main-session forward against 54 + 3.6 ms alone. Turning spinning off costs
every run (a batch-1 forward 4.4 instead of 3.7 ms), and one process-wide pool cannot flush denormals (RISE lost
15%). session.force_spinning_stop (session_options) keeps the threads spinning within a run and stops them when it
ends, which removes the switch cost without either loss.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

import numpy as np
import onnx

from onnxplain.server.engine.cancel import CancelToken
from onnxplain.server.engine.pinned import ShapePinnedSession
from onnxplain.server.engine.scheduler import RunScheduler
from onnxplain.server.engine.session import Session, create_session, run_guarded, session_options
from onnxplain.server.errors import Unavailable, UnsupportedGraph

GraphBuilder = Callable[[onnx.ModelProto], onnx.ModelProto]
# Derived graphs kept per model: keys carry sizes (RISE: image size and grid), so a model with a dynamic input size
# could otherwise grow the cache without bound. Least recently used goes first.
MAX_DERIVED_SESSIONS = 8


class DerivedSession:
    """A derived graph's session: named feeds in, named outputs out, under a request's cancel token.

    One call is one ONNX Runtime run; `runs_for` and `images_per_run` let a PassCounter count it like the main
    session (the caller records the images each run scored)."""

    def __init__(self, session: Session, scheduler: RunScheduler | None = None) -> None:
        self._session = session
        self._scheduler = scheduler
        self.input_names = tuple(value.name for value in session.get_inputs())
        self.output_names = tuple(value.name for value in session.get_outputs())
        # What the builder noted about the graph (the model's metadata_props), e.g. which layer it reads out.
        self.metadata = dict(session.get_modelmeta().custom_metadata_map)
        # Static input shapes (None for symbolic dimensions), to shape feeds.
        self.input_shapes = {
            value.name: tuple(d if isinstance(d, int) else None for d in value.shape) for value in session.get_inputs()
        }

    @property
    def providers(self) -> list[str]:
        return self._session.get_providers()

    @property
    def pins_shapes(self) -> bool:
        """Whether each input shape has a session of its own (CUDA, engine/pinned.py): callers keep shapes few."""
        return isinstance(self._session, ShapePinnedSession)

    def runs_for(self, images: int) -> int:
        return 1

    def images_per_run(self, images: int) -> int:
        return images

    def run(
        self,
        feed: dict[str, np.ndarray],
        token: CancelToken | None = None,
        output_names: Sequence[str] = (),
        *,
        mergeable: bool = False,
    ) -> list[np.ndarray]:
        """The outputs (all, or those named) for one run; raises Cancelled when the token fires. `mergeable`: every
        feed and output holds one row per image, so the run may share a batch with other requests' rows."""
        names = list(output_names or self.output_names)
        shape = next(iter(feed.values())).shape if feed else ()
        return run_guarded(self._session, names, feed, token, shape, self._scheduler, mergeable, derived=True)


class DerivedGraphs:
    """Builds and caches the derived sessions of one loaded model version; safe to use from many threads."""

    def __init__(
        self,
        model_path: Path,
        *,
        providers: Sequence[str | tuple[str, dict]],
        threads: int,
        max_sessions: int = MAX_DERIVED_SESSIONS,
        scheduler: RunScheduler | None = None,
    ) -> None:
        self.model_path = model_path
        self.scheduler = scheduler
        self.providers = list(providers)
        self.threads = threads
        self.max_sessions = max_sessions
        self.builds = 0  # graphs built so far: lets tests see that a second request reused the first's
        self._file_state = _file_state(model_path)
        self._sessions: OrderedDict[Hashable, DerivedSession] = OrderedDict()
        # One lock for lookups and builds: builds are rare, and a request waiting for the graph another request is
        # building gets that graph rather than building it twice.
        self._lock = threading.Lock()

    def session(self, key: Hashable, build: GraphBuilder) -> DerivedSession:
        """The session of the graph `build` derives from the model's full graph, built on the first call for `key`.
        `build` may modify the graph it is given."""
        with self._lock:
            cached = self._sessions.get(key)
            if cached is not None:
                self._sessions.move_to_end(key)
                return cached
            derived = build(self._full_graph())
            try:
                created = create_session(derived, session_options(self.threads), self.providers)
            except Exception as error:  # ONNX Runtime's errors derive from Exception only
                raise UnsupportedGraph(f"ONNX Runtime cannot load the graph onnxplain built: {error}") from error
            session = DerivedSession(created, self.scheduler)
            self.builds += 1
            self._sessions[key] = session
            if len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
            return session

    def _full_graph(self) -> onnx.ModelProto:
        """The model's graph with its weights. The file is the one the main session was created from, unless it was
        replaced on disk since (the registry then serves a reload soon): a graph derived from another model would
        give wrong answers silently, so that is refused."""
        if _file_state(self.model_path) != self._file_state:
            raise Unavailable(
                f"{self.model_path} changed on disk since the model was loaded; it serves again once reloaded"
            )
        return onnx.load(str(self.model_path))  # external data resolved beside the file


def _file_state(path: Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_mtime_ns, stat.st_size
