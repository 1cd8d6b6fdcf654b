"""One ONNX Runtime session per model version, created once and shared by every request."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from onnxplain.server.engine.cancel import CancelToken
from onnxplain.server.engine.pinned import ShapePinnedSession, padded_rows
from onnxplain.server.engine.providers import CUDA, first_provider
from onnxplain.server.engine.scheduler import RunScheduler
from onnxplain.server.errors import Cancelled, InternalError, InvalidInput, ResourceExhausted

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
    ) -> None:
        self._session = create_session(model_path, session_options(threads), list(providers))
        self.scheduler = scheduler
        self.input_name = input_name
        self.output_name = output_name
        self.fixed_batch = fixed_batch
        input_type = next(i.type for i in self._session.get_inputs() if i.name == input_name)
        self._input_dtype = np.dtype(_INPUT_DTYPES.get(input_type, np.float32))

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
        (output,) = run_guarded(self._session, [self.output_name], feed, token, batch.shape, self.scheduler, mergeable)
        return output


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
) -> list[np.ndarray]:
    """One ONNX Runtime run under a request's cancel token, through the model's scheduler when it has one (merged
    with other requests' rows when `mergeable`: every feed and output has one row per image); failures become
    domain errors naming `shape`. A `derived` graph is one onnxplain built, fed only what the engine checked: its
    failures are onnxplain's own (InternalError), not the caller's."""
    if token is not None:
        token.raise_if_cancelled()
    try:
        if scheduler is None:
            return _run(session, output_names, feed, token.run_options if token else None, mergeable)
        names = list(feed)
        rows = tuple((name, feed[name].shape[1:], feed[name].dtype.str) for name in names)
        key = (id(session), tuple(output_names), rows) if mergeable else None

        def runner(arrays: list[np.ndarray], options: ort.RunOptions | None) -> list[np.ndarray]:
            return _run(session, output_names, dict(zip(names, arrays, strict=True)), options, mergeable)

        return scheduler.run(runner, [feed[name] for name in names], token, key=key)
    except (Cancelled, ResourceExhausted):
        raise
    except Exception as error:
        if token is not None and token.cancelled:
            raise Cancelled("the call was cancelled") from error
        raise _classify_run_error(error, shape, derived) from error


def _run(
    session: Session,
    output_names: list[str],
    feed: dict[str, np.ndarray],
    options: ort.RunOptions | None,
    rows_aligned: bool,
) -> list[np.ndarray]:
    """One run; a shape-pinned session pads rows-aligned runs to its buckets."""
    if isinstance(session, ShapePinnedSession):
        return session.run(output_names, feed, options, rows_aligned=rows_aligned)
    return session.run(output_names, feed, options)


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
