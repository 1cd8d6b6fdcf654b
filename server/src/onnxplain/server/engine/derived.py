"""Sessions for graphs derived from a served model (backward graphs, CAM readouts, RISE in one graph), built off the
serving path and held within one memory budget for the whole process.

A method describes a derived graph by a hashable key and a builder that turns the model's full graph into it. The
graph is built and its session created once per key, under the main session's providers and threads, and shared by
every request, like the main session.

Builds never stall other requests. The cache's lock is held only for dictionary accesses: a request for a cached
graph or for another key never waits for a build, nor does the main session. A second request for a graph being
built waits for that build, not building it twice, and gets the same session. At most BUILDS_AT_ONCE builds run in
the process at once; a build waiting for its turn, and a request waiting for another's build, stop when their call
is cancelled or its deadline passes.

Memory is a budget (DerivedMemory): the model's weights are read once at load and every derived session uses them
in place (engine/session.py, SharedWeights); a session is charged its graph without those weights, the shared
weights it reads (what its optimiser may copy), and one image's activations. A build holds room before it starts
(for the copy of the weights it works on), then room for its session before that is created. The least recently
used sessions that are not running are evicted to make room; a graph that cannot fit even then is refused with
RESOURCE_EXHAUSTED before it is built or its session created. A model may have a budget of its own within the
process's (config.yaml's memory_budget_mb): its own sessions are evicted for it. A session stays charged until the
last request holding it lets it go.

Derived sessions run without ONNX Runtime's CPU arena: an arena keeps each session's largest run for the session's
lifetime, and shrinking it after runs (memory.enable_memory_arena_shrinkage) still lets it grow past what a run
needs (it extends in powers of two); without it a run's activations are freed when the run ends.

Derived sessions keep the main session's thread options. Each session owns a thread pool, and a request often runs two
sessions back to back (a gradient method: the scoring forward on the main session, then the backward session).
Idle threads that spun on after a run competed with the next session's threads for the cores: on 2 cores a RISE
graph batch ran 93 ms right after a main-session forward against 54 + 3.6 ms alone. Turning spinning off costs
every run (a batch-1 forward 4.4 instead of 3.7 ms), and one process-wide pool cannot flush denormals (RISE lost
15%). session.force_spinning_stop (session_options) keeps the threads spinning within a run and stops them when it
ends, which removes the switch cost without either loss.
"""

from __future__ import annotations

import copy
import itertools
import os
import threading
import weakref
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from onnxplain.server.engine.cancel import CANCEL_POLL_SECONDS, CancelToken
from onnxplain.server.engine.pinned import ShapePinnedSession
from onnxplain.server.engine.providers import CPU, first_provider
from onnxplain.server.engine.scheduler import RunScheduler
from onnxplain.server.engine.session import (
    Session,
    SharedWeights,
    create_session,
    release_freed_memory,
    run_guarded,
    session_options,
)
from onnxplain.server.errors import Cancelled, InternalError, ResourceExhausted, UnsupportedGraph

GraphBuilder = Callable[[onnx.ModelProto], onnx.ModelProto]
# Derived graphs kept per model, whatever the budget: each session owns a thread pool, and keys carry sizes (RISE:
# image size and grid), so a model with a dynamic input size could otherwise gather sessions without end.
MAX_DERIVED_SESSIONS = 8
# Graph builds running at once in the process: a build is mostly Python holding the GIL, so more would only slow
# each other and the requests being served.
BUILDS_AT_ONCE = 2
# The default budget: this share of the machine's memory (or of the container's, when its cgroup sets a limit).
DEFAULT_BUDGET_SHARE = 0.5
_MIB = 1024 * 1024


def default_memory_budget() -> int:
    """Bytes the derived sessions of all models may hold by default: DEFAULT_BUDGET_SHARE of the memory."""
    return int(total_memory() * DEFAULT_BUDGET_SHARE)


def total_memory() -> int:
    """The machine's memory, or the container's memory limit when that is lower (cgroup v2, then v1)."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():  # "max" when unlimited
            total = min(total, int(text))
    return total


def derived_session_options(threads: int) -> ort.SessionOptions:
    """The main session's options, without the CPU arena (see the module docstring), and without ONNX Runtime's
    layout-level optimisations: on an AVX-512 CPU (AMD EPYC) they made the backward graph of a RegNet-X (grouped
    convolutions) give input gradients 2.7% off torch's (max relative; 1e-6 at the extended level), while the
    forward graph stayed exact. The fusion at fault is not found yet; it costs backward runs time (bench/RESULTS.md)."""
    options = session_options(threads)
    options.enable_cpu_mem_arena = False
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    return options


class DerivedSession:
    """A derived graph's session: named feeds in, named outputs out, under a request's cancel token.

    One call is one ONNX Runtime run; `runs_for` and `images_per_run` let a PassCounter count it like the main
    session (the caller records the images each run scored)."""

    def __init__(
        self,
        session: Session,
        scheduler: RunScheduler | None = None,
        *,
        cost: int = 0,
        weights: SharedWeights | None = None,
    ) -> None:
        self._session = session
        self._scheduler = scheduler
        # Bytes charged to the memory budget while this object lives.
        self.cost = cost
        # The shared weights the session reads in place: they must outlive it.
        self._weights = weights
        self._running = 0
        self._running_lock = threading.Lock()
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

    @property
    def running(self) -> bool:
        """Whether a run is in flight: such a session is never evicted."""
        return self._running > 0

    @contextmanager
    def in_use(self) -> Iterator[None]:
        """Mark the session running for the block."""
        with self._running_lock:
            self._running += 1
        try:
            yield
        finally:
            with self._running_lock:
                self._running -= 1

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
        shared: Mapping[str, np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        """The outputs (all, or those named) for one run; raises Cancelled when the token fires. `mergeable`: every
        feed and output holds one row per image, so the run may share a batch with other requests' rows; `shared`:
        feeds common to all rows (a rule's parameters), fed beside `feed` (engine/session.py run_guarded)."""
        names = list(output_names or self.output_names)
        shape = next(iter(feed.values())).shape if feed else ()
        with self.in_use():
            return run_guarded(
                self._session, names, feed, token, shape, self._scheduler, mergeable, derived=True, shared=shared
            )


class DerivedMemory:
    """The bytes the derived sessions of every model may hold together, and the turns of builds.

    `used` counts every derived session alive, cached or evicted but still held by a request; `reserved` the builds
    between their reservation and their session. Its lock also guards each DerivedGraphs' cache, so eviction sees
    every model's sessions at once; it is only ever held for dictionary work."""

    def __init__(self, limit: int, builds_at_once: int = BUILDS_AT_ONCE) -> None:
        self.limit = limit
        self.used = 0
        self.reserved = 0
        self.sessions = 0
        self.evictions = 0
        self.refusals = 0
        self.lock = threading.RLock()  # reentrant: a session evicted under it may be freed, and released, at once
        self._owners: weakref.WeakSet[DerivedGraphs] = weakref.WeakSet()
        self._turns = threading.BoundedSemaphore(builds_at_once)
        self._clock = itertools.count(1)

    def set_limit(self, limit: int) -> None:
        """Change the budget, evicting idle sessions until what is held fits it."""
        with self.lock:
            self.limit = limit
            evicted = self._make_room(None, 0)[1]
        if evicted:
            release_freed_memory()

    def register(self, owner: DerivedGraphs) -> None:
        with self.lock:
            self._owners.add(owner)

    def tick(self) -> int:
        """A number larger than every earlier one: the order of use, for least-recently-used eviction."""
        return next(self._clock)

    @contextmanager
    def turn(self, token: CancelToken | None) -> Iterator[None]:
        """One of the process's build turns for the block; waiting for it ends with Cancelled when the token fires."""
        if token is not None:
            token.raise_if_cancelled()
        while not self._turns.acquire(timeout=CANCEL_POLL_SECONDS):
            if token is not None:
                token.raise_if_cancelled()
        try:
            yield
        finally:
            self._turns.release()

    @contextmanager
    def reservation(self, owner: DerivedGraphs, cost: int) -> Iterator[Reservation]:
        """Room for `cost` bytes of `owner`'s during the block (a graph being built, then its session created), made
        by evicting the least recently used idle sessions (of any model for the process's budget, of `owner` for its
        own); ResourceExhausted when even that cannot make enough. The block may resize what it holds."""
        reservation = Reservation(self, owner)
        reservation.resize(cost)
        try:
            yield reservation
        finally:
            reservation.resize(0)

    def hold(self, owner: DerivedGraphs, held: int, cost: int) -> None:
        """Turn `owner`'s reservation of `held` bytes into one of `cost` bytes; see Reservation.resize."""
        with self.lock:
            self.reserved -= held
            owner.reserved -= held
            fits, evicted = self._make_room(owner, cost)
            if fits:
                self.reserved += cost
                owner.reserved += cost
            else:
                self.refusals += 1
                in_use = (self.used + self.reserved, owner.used + owner.reserved)
        if evicted:
            release_freed_memory()
        if not fits:
            raise ResourceExhausted(self._refusal(owner, cost, *in_use))

    def _refusal(self, owner: DerivedGraphs, cost: int, held: int, held_by_owner: int) -> str:
        if owner.limit is not None and held_by_owner + cost > owner.limit:
            budget, held, where = owner.limit, held_by_owner, "this model's memory_budget_mb (config.yaml)"
        else:
            budget, where = self.limit, "the derived-graph memory budget (--memory-budget)"
        return (
            f"the graph this method needs would take about {_mib(cost)} MiB; {where} is {_mib(budget)} MiB and "
            f"{_mib(held)} MiB of it are held by graphs in use now: try again later, or raise the budget"
        )

    def admit(self, owner: DerivedGraphs, session: DerivedSession) -> None:
        """Charge a new session's cost until it is garbage: a request may hold it after the cache let it go."""
        with self.lock:
            self.used += session.cost
            owner.used += session.cost
            self.sessions += 1
        weakref.finalize(session, self._release, owner, session.cost)

    def evict_beyond(self, owner: DerivedGraphs, count: int) -> None:
        """Evict `owner`'s least recently used idle sessions while it caches more than `count`."""
        with self.lock:
            while owner.cached_count() > count and self._evict_least_recent([owner]):
                pass

    def _release(self, owner: DerivedGraphs, cost: int) -> None:
        with self.lock:
            self.used -= cost
            owner.used -= cost
            self.sessions -= 1

    def _make_room(self, owner: DerivedGraphs | None, cost: int) -> tuple[bool, bool]:
        """Evict until `cost` more bytes of `owner`'s fit the process's budget and the owner's own; (whether they
        fit, whether anything was evicted). Under the lock."""
        evicted = False
        while owner is not None and owner.limit is not None and owner.used + owner.reserved + cost > owner.limit:
            if not self._evict_least_recent([owner]):
                return False, evicted
            evicted = True
        while self.used + self.reserved + cost > self.limit:
            if not self._evict_least_recent(list(self._owners)):
                return False, evicted
            evicted = True
        return True, evicted

    def _evict_least_recent(self, owners: Sequence[DerivedGraphs]) -> bool:
        """Drop the least recently used idle session among `owners`' caches; False when none is idle."""
        candidates = [(last_used, owner, key) for owner in owners for key, last_used in owner.idle_entries()]
        if not candidates:
            return False
        _, owner, key = min(candidates, key=lambda candidate: candidate[0])
        owner.drop(key)
        self.evictions += 1
        return True


class Reservation:
    """Bytes an owner holds in the budget while it builds a graph and creates its session (DerivedMemory.reservation):
    first what the build's copy of the model costs, then what the built graph's session will be charged."""

    def __init__(self, memory: DerivedMemory, owner: DerivedGraphs) -> None:
        self._memory = memory
        self._owner = owner
        self.held = 0

    def resize(self, cost: int) -> None:
        """Hold `cost` bytes instead, evicting to make room; ResourceExhausted, holding none, if they cannot fit."""
        held, self.held = self.held, 0
        self._memory.hold(self._owner, held, cost)
        self.held = cost


@dataclass(eq=False)
class _Entry:
    """A cache slot: being built until `done` is set, then holding the session, or the build's error."""

    done: threading.Event = field(default_factory=threading.Event)
    session: DerivedSession | None = None
    error: BaseException | None = None
    last_used: int = 0


class DerivedGraphs:
    """Builds and caches the derived sessions of one loaded model version; safe to use from many threads."""

    def __init__(
        self,
        model: onnx.ModelProto | Path,
        *,
        providers: Sequence[str | tuple[str, dict]],
        threads: int,
        scheduler: RunScheduler | None = None,
        weights_dir: Path | None = None,
        memory: DerivedMemory | None = None,
        max_sessions: int = MAX_DERIVED_SESSIONS,
        memory_limit: int | None = None,
    ) -> None:
        """`model`: the served graph as loaded (its external data, if any, is read from `weights_dir`), or its file,
        read here once. `memory_limit`: bytes this model's derived sessions may hold, within the process's budget
        (config.yaml's memory_budget_mb); None: only the process's budget."""
        if isinstance(model, Path):
            model, weights_dir = onnx.load(str(model), load_external_data=False), model.parent
        self.weights = SharedWeights(model, weights_dir)
        self.providers = list(providers)
        self.threads = threads
        self.scheduler = scheduler
        self.max_sessions = max_sessions
        self.memory = memory or DERIVED_MEMORY
        self.limit = memory_limit
        # Bytes of this model's sessions alive and of its builds under way; kept by self.memory under its lock.
        self.used = 0
        self.reserved = 0
        self.builds = 0  # graphs built so far: lets tests see that a second request reused the first's
        # On other providers (CUDA) each session copies the weights to its device anyway: they are not shared.
        self._shares_weights = first_provider(self.providers) == CPU
        self._entries: dict[Hashable, _Entry] = {}
        self.memory.register(self)

    @property
    def cached(self) -> list[Hashable]:
        """Keys of the sessions cached now, least recently used first."""
        with self.memory.lock:
            ready = [(entry.last_used, key) for key, entry in self._entries.items() if entry.session is not None]
        return [key for _, key in sorted(ready, key=lambda item: item[0])]

    def cached_count(self) -> int:
        with self.memory.lock:
            return sum(entry.session is not None for entry in self._entries.values())

    def idle_entries(self) -> list[tuple[Hashable, int]]:
        """(key, last use) of the cached sessions no run is using. Under the memory lock."""
        return [
            (key, entry.last_used)
            for key, entry in self._entries.items()
            if entry.session is not None and not entry.session.running
        ]

    def drop(self, key: Hashable) -> None:
        """Forget a cached session. Under the memory lock."""
        del self._entries[key]

    def session(self, key: Hashable, build: GraphBuilder, token: CancelToken | None = None) -> DerivedSession:
        """The session of the graph `build` derives from the model's full graph, built on the first call for `key`
        (`build` may modify the graph it is given). Waiting for a build turn or for another request's build of the
        same key ends with Cancelled when `token` fires; ResourceExhausted when the graph cannot fit the budget."""
        while True:
            with self.memory.lock:
                entry = self._entries.get(key)
                if entry is not None and entry.session is not None:
                    entry.last_used = self.memory.tick()
                    return entry.session
                builder = entry is None
                if builder:
                    entry = self._entries[key] = _Entry()
            if builder:
                return self._build(key, entry, build, token)
            _wait(entry.done, token)
            if entry.session is not None:
                with self.memory.lock:
                    entry.last_used = self.memory.tick()
                return entry.session
            # The builder's own cancellation says nothing of this request: it then looks again (and may build).
            if not isinstance(entry.error, Cancelled):
                raise _for_waiter(entry.error) from entry.error

    def _build(self, key: Hashable, entry: _Entry, build: GraphBuilder, token: CancelToken | None) -> DerivedSession:
        try:
            with self.memory.turn(token):
                session = self._create(build)
        except BaseException as error:
            entry.error = error
            with self.memory.lock:
                if self._entries.get(key) is entry:
                    del self._entries[key]
            entry.done.set()
            raise
        with self.memory.lock:
            entry.session = session
            entry.last_used = self.memory.tick()
            self.builds += 1
        entry.done.set()
        self.memory.evict_beyond(self, self.max_sessions)
        return session

    def _create(self, build: GraphBuilder) -> DerivedSession:
        """Build and create the session, holding room in the budget before either: first for the copy of the model
        the builder works on, then for what the session will be charged."""
        with self.memory.reservation(self, self.weights.nbytes) as reservation:  # the copy of the weights
            derived = build(self.weights.model())
            shared = self.weights.detach(derived) if self._shares_weights else []
            cost = derived.ByteSize() + self.weights.bytes_of(shared) + activation_bytes(derived)
            reservation.resize(cost)
            options = derived_session_options(self.threads)
            self.weights.share_into(options, shared)
            try:
                created = create_session(derived, options, self.providers)
            except Exception as error:  # ONNX Runtime's errors derive from Exception only
                raise UnsupportedGraph(f"ONNX Runtime cannot load the graph onnxplain built: {error}") from error
            session = DerivedSession(created, self.scheduler, cost=cost, weights=self.weights)
            self.memory.admit(self, session)
        return session


def activation_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the intermediate tensors of a run on one image (symbolic dimensions such as the batch taken as 1),
    from ONNX shape inference: an upper bound of what the run allocates beside the weights, since ONNX Runtime
    reuses buffers. Tensors whose shape stays unknown count nothing."""
    try:
        graph = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
    except Exception:  # shape inference failing says nothing of the session: count what the graph declares
        graph = model.graph
    return sum(_tensor_bytes(value) for value in (*graph.value_info, *graph.output))


def _tensor_bytes(value: onnx.ValueInfoProto) -> int:
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return 0
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).itemsize
    except (KeyError, TypeError, ValueError):
        return 0
    elements = 1
    for dim in tensor.shape.dim:
        elements *= dim.dim_value if dim.HasField("dim_value") else 1
    return elements * itemsize


def _for_waiter(error: BaseException) -> BaseException:
    """A failed build's error for a request that waited for that build: the same error, in an instance of its own."""
    try:
        return copy.copy(error)
    except Exception:  # an error its arguments do not rebuild
        return InternalError(f"building the graph failed ({type(error).__name__}: {error})")


def _wait(done: threading.Event, token: CancelToken | None) -> None:
    """Wait for another request's build; Cancelled when this request's token fires first."""
    while not done.wait(CANCEL_POLL_SECONDS):
        if token is not None:
            token.raise_if_cancelled()


def _mib(size: int) -> int:
    return -(-size // _MIB)


# One budget per process: every model's derived sessions share the memory of one machine.
DERIVED_MEMORY = DerivedMemory(default_memory_budget())
