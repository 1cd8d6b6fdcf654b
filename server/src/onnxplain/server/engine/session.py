"""One ONNX Runtime session per model version, created once and shared by every request."""

from __future__ import annotations

import copy
import ctypes
import functools
import logging
import re
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from onnxplain.server.engine.backward.graph import all_tensors, subgraphs
from onnxplain.server.engine.cancel import CancelToken
from onnxplain.server.engine.pinned import ShapePinnedSession, padded_rows
from onnxplain.server.engine.providers import CPU, CUDA, first_provider
from onnxplain.server.engine.scheduler import RunScheduler
from onnxplain.server.errors import Cancelled, InternalError, InvalidInput, ResourceExhausted

log = logging.getLogger("onnxplain.server")
_ORT_ERROR_LEVEL = 3
_IR_VERSION_LIMIT = re.compile(r"Unsupported model IR version: \d+, max supported IR version: (\d+)")
# Inputs fed in a dtype other than float32, by ONNX Runtime's type name; the images themselves are float32 throughout.
_INPUT_DTYPES = {
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(uint16)": np.uint16,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}
Session = ort.InferenceSession | ShapePinnedSession
# Weights shared between sessions: float tensors big enough to matter (shapes, axes and other small constants stay in
# each graph, where ONNX Runtime folds them like any constant). float16 is left out: ONNX Runtime lays float16
# convolutions out as NHWC on some CPUs, rewriting their weights (see _OPERANDS_LEFT_AS_THEY_ARE).
_SHAREABLE_DTYPES = frozenset({np.dtype(np.float32), np.dtype(np.float64)})
# Ops whose constant operands ONNX Runtime's optimisers never rewrite under the same name. A rewrite in place (the
# transpose optimiser transposes or reshapes an initializer that feeds an elementwise or layout-agnostic op, the
# NHWC layout transform the weights of quantized convolutions) would be lost on a shared tensor, since the session
# takes the shared value by name: the graph would run with the original layout. Fusions and reorderings of these
# ops' weights (Conv+BatchNorm, NCHWc) write new tensors under new names.
_OPERANDS_LEFT_AS_THEY_ARE = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
MIN_SHARED_BYTES = 1024
_TENSOR_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data")
# A run of more than one image whose feeds reach this many bytes (7 RGB images of 224x224 in float32) gives its arena
# growth back when it ends (ModelSession).
ARENA_RELEASE_FEED_BYTES = 4 * 1024 * 1024
# The options of runs that release the CPU arena when they end (ModelSession): nothing cancels them.
_RELEASING_ARENA = ort.RunOptions()
_RELEASING_ARENA.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")


def session_options(threads: int) -> ort.SessionOptions:
    """Options chosen once per session: thread count set deliberately, denormals flushed (masked images
    produce denormals that slow the CPU provider), full graph optimisation done at load, not per call.

    A session's idle threads stop spinning as soon as its run ends (session.force_spinning_stop); they still spin
    between the ops of a run. A model has several sessions (the model's, a backward graph's per method) and a
    gradient request runs two of them back to back: while the first one's threads spun on, the second competed with
    them for the cores. Measured on 2 cores (engine called in process, medians of 40 calls, alternating processes):
    MobileNetV3 224x224 saliency 25-71 ms against 52-102 before, Grad-CAM 11-21 against 16-48; ResNet-50
    saliency 144-174 against 210-519, Grad-CAM 82-90 against 157-162; a batch-1 forward and RISE unchanged."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = _ORT_ERROR_LEVEL
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return options


class SharedWeights:
    """A model's weights, read once at load and kept as read-only arrays that the sessions of graphs derived from the
    model use in place, so each derived session holds no copy of its own and nothing is read from disk again (a file
    changed after load cannot give a derived graph other weights than the model serves with).

    A derived graph is serialised without the shared tensors' data: each is an external-data reference to an
    in-memory file (SessionOptions.add_external_initializers_from_files_in_memory, which satisfies ONNX Runtime's
    check that the data exists) and its value comes from the model's OrtValue (SessionOptions.add_initializer),
    which ONNX Runtime uses without copying. Weight prepacking is turned off for such sessions: a prepacked weight
    is a per-session copy and, with the original kept here, would cost more than not sharing. The session's own
    layout transforms (NCHWc reordering of convolution weights) still copy what they reorder."""

    def __init__(self, model: onnx.ModelProto, weights_dir: Path | None = None) -> None:
        """`model` is left as it is; tensors it keeps in external files are read from `weights_dir` (which the
        loader has checked)."""
        self._graph = onnx.ModelProto()
        self._graph.CopyFrom(model)
        if weights_dir is not None:
            _read_external_data(self._graph, weights_dir)
        self._arrays: dict[str, np.ndarray] = {}
        self._files: dict[str, str] = {}
        for tensor in self._graph.graph.initializer:
            array = numpy_helper.to_array(tensor)
            if array.dtype not in _SHAREABLE_DTYPES or array.nbytes < MIN_SHARED_BYTES:
                continue
            array = np.ascontiguousarray(array)
            array.setflags(write=False)
            self._arrays[tensor.name] = array
            self._files[tensor.name] = f"onnxplain-weight-{len(self._files)}"
            _refer_to_file(tensor, self._files[tensor.name], array.nbytes)
        # ONNX Runtime reads the arrays' memory for as long as a session lives: the OrtValues keep them.
        self._values = {name: ort.OrtValue.ortvalue_from_numpy(array) for name, array in self._arrays.items()}

    @functools.cached_property
    def tensor_names(self) -> frozenset[str]:
        """Every tensor the main graph holds or computes, so a name a request gives (a CAM layer) is checked before
        any graph is built for it."""
        graph = self._graph.graph
        return frozenset(
            [value.name for value in graph.input]
            + [tensor.name for tensor in graph.initializer]
            + [name for node in graph.node for name in node.output if name]
        )

    @property
    def nbytes(self) -> int:
        return sum(array.nbytes for array in self._arrays.values())

    def bytes_of(self, names: Iterable[str]) -> int:
        return sum(self._arrays[name].nbytes for name in names)

    def model(self) -> onnx.ModelProto:
        """A copy of the model with its weights in place, for a builder to derive a graph from (and modify)."""
        model = onnx.ModelProto()
        model.CopyFrom(self._graph)
        for tensor in model.graph.initializer:
            array = self._arrays.get(tensor.name)
            if array is not None:
                del tensor.external_data[:]
                tensor.data_location = onnx.TensorProto.DEFAULT
                tensor.raw_data = array.tobytes()
        return model

    def detach(self, model: onnx.ModelProto) -> list[str]:
        """Leave out of `model` the data of every initializer that still holds a shared tensor's exact value (a
        builder may have changed some: converted to float32, redrawn) and that only ops in _OPERANDS_LEFT_AS_THEY_ARE
        read; return their names for `share_into`."""
        safe = _read_only_by_weight_ops(model.graph)
        shared = []
        for tensor in model.graph.initializer:
            array = self._arrays.get(tensor.name)
            if array is not None and tensor.name in safe and _holds(tensor, array):
                _refer_to_file(tensor, self._files[tensor.name], array.nbytes)
                shared.append(tensor.name)
        return shared

    def share_into(self, options: ort.SessionOptions, names: Sequence[str]) -> None:
        """Make a session created with `options` take the named tensors from here (see the class docstring)."""
        if not names:
            return
        options.add_session_config_entry("session.disable_prepacking", "1")
        options.add_external_initializers_from_files_in_memory(
            [self._files[name] for name in names],
            [memoryview(self._arrays[name]).cast("B") for name in names],
            [self._arrays[name].nbytes for name in names],
        )
        for name in names:
            options.add_initializer(name, self._values[name])


def _read_only_by_weight_ops(graph: onnx.GraphProto) -> set[str]:
    """Names that only nodes of _OPERANDS_LEFT_AS_THEY_ARE (standard domain) read: not graph outputs, not read inside
    a subgraph."""
    readers: dict[str, set[str]] = {}
    for node in graph.node:
        kind = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        for name in node.input:
            readers.setdefault(name, set()).add(kind)
        for subgraph in subgraphs(node):
            for name in _names_read_in(subgraph):
                readers.setdefault(name, set()).add("subgraph")
    for value in graph.output:
        readers.setdefault(value.name, set()).add("output")
    return {name for name, kinds in readers.items() if kinds <= _OPERANDS_LEFT_AS_THEY_ARE}


def _names_read_in(graph: onnx.GraphProto) -> Iterator[str]:
    for node in graph.node:
        yield from node.input
        for subgraph in subgraphs(node):
            yield from _names_read_in(subgraph)


def _holds(tensor: onnx.TensorProto, array: np.ndarray) -> bool:
    """Whether the tensor's data is bit for bit the array (NaNs included)."""
    if uses_external_data(tensor) or tuple(tensor.dims) != array.shape:
        return False
    value = numpy_helper.to_array(tensor)
    if value.dtype != array.dtype:
        return False
    return np.array_equal(np.ascontiguousarray(value).reshape(-1).view(np.uint8), array.reshape(-1).view(np.uint8))


def _refer_to_file(tensor: onnx.TensorProto, location: str, length: int) -> None:
    """Turn the tensor into a reference to `length` bytes of the in-memory file `location`, without its data."""
    for field in _TENSOR_DATA_FIELDS:
        tensor.ClearField(field)
    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


class FixedBatchRuns:
    """How a session over a graph with `fixed_batch` (None: any batch) splits images into runs (run_in_chunks),
    for a PassCounter."""

    fixed_batch: int | None

    def runs_for(self, images: int) -> int:
        """How many ONNX Runtime runs `run` makes for this many images."""
        return -(-images // self.fixed_batch) if self.fixed_batch else 1

    def images_per_run(self, images: int) -> int:
        return min(images, self.fixed_batch) if self.fixed_batch else images


class ModelSession(FixedBatchRuns):
    """Runs batches of model inputs and returns (n, K) float32 scores.

    Models exported with a fixed batch dimension (often 1) are run in chunks of that size, the last chunk padded,
    so callers can always hand over any number of images.

    On the CPU provider the session allocates from ONNX Runtime's CPU arena, which keeps what its largest run grew it
    by for the session's lifetime: after one perturbation batch (hundreds of MB of activations on a ResNet) an idle
    server stayed that much bigger, outside the derived-graph budget. A request that ran batches of more than one
    image whose feeds reach ARENA_RELEASE_FEED_BYTES therefore has the arena give that growth back once its work has
    ended (CancelToken.at_end): one batch-1 run under memory.enable_memory_arena_shrinkage frees every arena region
    no run in flight uses, and the C heap is trimmed after it (release_freed_memory; without the trim glibc kept the
    freed regions, fragmented). Releasing after every large batch instead made each next batch fault its
    activations in again, which on a light model costs a large part of a run (bench/RESULTS.md). The arena's first
    region, sized by the load's batch-1 warm-up, is never freed (ONNX Runtime's default extend strategy keeps it).
    Runs merged from several requests keep the arena: dynamic batching bounds their rows. A run outside any request
    (no token) releases at once.
    """

    def __init__(
        self,
        model_path: Path,
        *,
        providers: Sequence[str | tuple[str, dict]],
        threads: int,
        input_name: str,
        output_name: str,
        fixed_batch: int | None,
        scheduler: RunScheduler | None = None,
        options: ort.SessionOptions | None = None,
    ) -> None:
        """`options`: the session's options when the caller keeps them (the loader, to cancel a creation that
        overruns its time limit); by default session_options(threads)."""
        self._session = create_session(model_path, options or session_options(threads), list(providers))
        self.scheduler = scheduler
        # A CUDA session's activations live on the device: its CPU arena holds only the feeds' copies.
        self._releases_arena = first_provider(providers) == CPU
        self.input_name = input_name
        self.output_name = output_name
        self.fixed_batch = fixed_batch
        input_type = next(i.type for i in self._session.get_inputs() if i.name == input_name)
        self._input_dtype = np.dtype(_INPUT_DTYPES.get(input_type, np.float32))

    def reading(self, output_name: str) -> ModelSession:
        """This session reading another of the model's outputs: the same ONNX Runtime session and scheduler (runs
        for different outputs are never merged into one batch: the scheduler keys merges on the output names)."""
        view = copy.copy(self)
        view.output_name = output_name
        return view

    @property
    def providers(self) -> list[str]:
        return self._session.get_providers()

    @property
    def pins_shapes(self) -> bool:
        """Whether each input shape has an ONNX Runtime session of its own (CUDA, engine/pinned.py)."""
        return isinstance(self._session, ShapePinnedSession)

    def run(self, batch: np.ndarray, token: CancelToken | None = None) -> np.ndarray:
        """Scores for a batch in the model's input layout; raises Cancelled when the token fires."""
        return _as_class_scores(self.run_output(batch, token))

    def run_output(self, batch: np.ndarray, token: CancelToken | None = None) -> np.ndarray:
        """The output as the graph shapes it: the loader's probe reads the shape a graph does not declare."""
        (output,) = run_in_chunks([batch], self.fixed_batch, lambda chunk: [self._run_once(chunk[0], token)])
        return output

    def _run_once(self, batch: np.ndarray, token: CancelToken | None) -> np.ndarray:
        feed = {self.input_name: _as_input_dtype(batch, self._input_dtype)}
        mergeable = self.fixed_batch is None
        large = self._releases_arena and _is_large_run(list(feed.values()))
        if large and token is not None:
            # A copy of one image: a view would keep the whole batch alive until the request ends.
            image = feed[self.input_name][:1].copy()
            token.at_end(id(self._session), functools.partial(self._release_arena, image))
        (output,) = run_guarded(
            self._session,
            [self.output_name],
            feed,
            token,
            batch.shape,
            self.scheduler,
            mergeable,
            release_arena=large and token is None,
        )
        return output

    def _release_arena(self, image: np.ndarray) -> None:
        """Give back what large runs grew the CPU arena by: a run of one image (the fixed batch's worth of it) whose
        end frees every region no run in flight uses. A failure only keeps the memory, so it is logged, not raised."""
        batch = np.repeat(image, self.fixed_batch or 1, axis=0)
        try:
            self._session.run([self.output_name], {self.input_name: batch}, _RELEASING_ARENA)
        except Exception:  # ONNX Runtime's errors derive from Exception only
            log.exception("releasing the CPU arena after a request's large runs failed")
        release_freed_memory()


def _as_input_dtype(batch: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The batch in the model's input dtype. Images are float32 inside the server; for an integer input (uint8
    pixels, the normalisation inside the graph) perturbed and interpolated values are rounded and clipped to the
    type's range here, so every method feeds what the type can hold."""
    if batch.dtype != dtype and np.issubdtype(dtype, np.integer):
        limits = np.iinfo(dtype)
        batch = np.clip(np.rint(batch), limits.min, limits.max)
    return np.ascontiguousarray(batch, dtype=dtype)


def run_in_chunks(
    arrays: Sequence[np.ndarray], step: int | None, run: Callable[[list[np.ndarray]], list[np.ndarray]]
) -> list[np.ndarray]:
    """`run` over rows of `arrays` (aligned on axis 0) in chunks of exactly `step` rows, the last one padded by
    repeating its last row, for graphs exported with a fixed batch; one call when `step` is None."""
    rows = len(arrays[0])
    if step is None or rows == step:
        return run(list(arrays))
    parts = []
    for start in range(0, rows, step):
        chunk = [array[start : start + step] for array in arrays]
        kept = len(chunk[0])
        parts.append([output[:kept] for output in run([padded_rows(part, step) for part in chunk])])
    return [np.concatenate(outputs) for outputs in zip(*parts, strict=True)]


def run_guarded(
    session: Session,
    output_names: list[str],
    feed: dict[str, np.ndarray],
    token: CancelToken | None,
    shape: tuple[int, ...],
    scheduler: RunScheduler | None = None,
    mergeable: bool = False,
    derived: bool = False,
    *,
    shared: Mapping[str, np.ndarray] | None = None,
    release_arena: bool = False,
) -> list[np.ndarray]:
    """One ONNX Runtime run under a request's cancel token, through the model's scheduler when it has one (merged
    with other requests' rows when `mergeable`: every feed and output has one row per image); failures become
    domain errors naming `shape`. A `derived` graph is one onnxplain built, fed only what the engine checked: its
    failures are onnxplain's own (InternalError), not the caller's.

    `shared` feeds are fed beside `feed` to every run and are common to all its rows (a rule's parameters): a run
    merges only with runs whose shared feeds hold the same values, and only the rows of `feed` are concatenated.
    `release_arena`: the run gives back what it grew the session's CPU arena by when it ends (a ModelSession's large
    run outside any request)."""
    if token is not None:
        token.raise_if_cancelled()
    shared = dict(shared or {})
    names = list(feed)

    def runner(arrays: list[np.ndarray], run_token: CancelToken | None) -> list[np.ndarray]:
        whole_feed = {**dict(zip(names, arrays, strict=True)), **shared}
        options = _RELEASING_ARENA if release_arena else run_token.run_options if run_token else None
        outputs = _run(session, output_names, whole_feed, options, mergeable, shared)
        if release_arena:
            release_freed_memory()
        return outputs

    try:
        arrays = [feed[name] for name in names]
        if scheduler is None:
            return runner(arrays, token)
        key = _merge_key(session, output_names, feed, shared) if mergeable else None
        return scheduler.run(runner, arrays, token, key=key)
    except (Cancelled, ResourceExhausted):
        raise
    except Exception as error:
        if token is not None and token.cancelled:
            raise Cancelled("the call was cancelled") from error
        raise _classify_run_error(error, shape, derived) from error


def _merge_key(
    session: Session, output_names: list[str], feed: dict[str, np.ndarray], shared: dict[str, np.ndarray]
) -> Hashable:
    """Runs with equal keys may share a batch: the same session and outputs, rows of the same shapes and dtypes, and
    shared feeds of the same values (bit for bit)."""
    rows = tuple((name, array.shape[1:], array.dtype.str) for name, array in feed.items())
    common = tuple((name, array.shape, array.dtype.str, array.tobytes()) for name, array in sorted(shared.items()))
    return id(session), tuple(output_names), rows, common


def _is_large_run(arrays: Sequence[np.ndarray]) -> bool:
    """Whether a run of these row-aligned arrays releases the arena (ARENA_RELEASE_FEED_BYTES)."""
    return len(arrays[0]) > 1 and sum(array.nbytes for array in arrays) >= ARENA_RELEASE_FEED_BYTES


def _run(
    session: Session,
    output_names: list[str],
    feed: dict[str, np.ndarray],
    options: ort.RunOptions | None,
    rows_aligned: bool,
    shared: Iterable[str],
) -> list[np.ndarray]:
    """One run; a shape-pinned session pads rows-aligned runs to its buckets (all feeds but the `shared` ones)."""
    if isinstance(session, ShapePinnedSession):
        return session.run(output_names, feed, options, rows_aligned=rows_aligned, shared=frozenset(shared))
    return session.run(output_names, feed, options)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_freed_memory() -> None:
    """Hand memory freed to the C heap back to the system: glibc keeps freed heap memory for reuse, so regions an
    arena or an evicted session freed below its mmap threshold would otherwise stay resident."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def pins_shapes(providers: Sequence[str | tuple[str, dict]]) -> bool:
    """Whether sessions on these providers get one ONNX Runtime session per input shape (engine/pinned.py)."""
    return first_provider(providers) == CUDA


def create_session(model: Path | onnx.ModelProto, options: ort.SessionOptions, providers: list) -> Session:
    """A session from a file or a graph in memory: one ONNX Runtime session per input shape on CUDA
    (engine/pinned.py), a single one elsewhere."""
    source = model if isinstance(model, Path) else model.SerializeToString()
    if pins_shapes(providers):
        # Later shapes' sessions are created from the serialised graph (a derived graph exists nowhere else).
        return ShapePinnedSession(lambda: _new_session(source, options, providers))
    return _new_session(source, options, providers)


def _new_session(source: Path | bytes, options: ort.SessionOptions, providers: list) -> ort.InferenceSession:
    """A model stamped with a newer IR version than this ONNX Runtime reads (recent onnx releases stamp the newest
    by default) is retried with the highest IR version it accepts."""
    try:
        return ort.InferenceSession(str(source) if isinstance(source, Path) else source, options, providers=providers)
    except Exception as error:
        supported = _IR_VERSION_LIMIT.search(str(error))
        if supported is None:
            raise
    # A file's external data is resolved beside it.
    model = onnx.load(str(source)) if isinstance(source, Path) else onnx.load_from_string(source)
    model.ir_version = int(supported.group(1))
    return ort.InferenceSession(model.SerializeToString(), options, providers=providers)


def _as_class_scores(scores: np.ndarray) -> np.ndarray:
    """(n, K) float32 from outputs shaped (n, K) or (n, K, 1, 1)."""
    scores = np.asarray(scores, dtype=np.float32)
    return scores.reshape(scores.shape[0], -1)


def _classify_run_error(error: Exception, shape: tuple[int, ...], derived: bool) -> Exception:
    message = str(error)
    if "allocate" in message.lower():
        return ResourceExhausted(f"out of memory running a batch of shape {list(shape)}: {message}")
    if derived:
        return InternalError(f"a graph onnxplain built failed on a batch of shape {list(shape)}: {message}")
    return InvalidInput(f"the model could not run on an input of shape {list(shape)}: {message}")


def _read_external_data(model: onnx.ModelProto, folder: Path) -> None:
    """Every tensor's external data read into the tensor. The loader has checked each file (repository/safety.py):
    a link that stays inside the model folder is allowed here, where onnx's own loader refuses every link."""
    for tensor in all_tensors(model):
        if not uses_external_data(tensor):
            continue
        info = ExternalDataInfo(tensor)
        with open(folder / info.location, "rb") as file:
            file.seek(info.offset or 0)
            tensor.raw_data = file.read(info.length) if info.length else file.read()
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
