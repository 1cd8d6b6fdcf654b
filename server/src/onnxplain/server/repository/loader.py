"""Turn a model version on disk into a LoadedModel, or a clear reason why it cannot serve."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from onnxplain.server.engine.admission import ExplanationSlots
from onnxplain.server.engine.backward.support import support_problems
from onnxplain.server.engine.batching import default_max_batch
from onnxplain.server.engine.derived import DerivedGraphs
from onnxplain.server.engine.providers import choose_providers
from onnxplain.server.engine.scheduler import BatchingPolicy, RunScheduler
from onnxplain.server.engine.session import ModelSession, session_options
from onnxplain.server.imaging.preprocess import target_size
from onnxplain.server.imaging.spec import FLOAT_INPUT_SCALE, PreprocessingSpec
from onnxplain.server.observability.metrics import batch_observer
from onnxplain.server.observability.names import shortened
from onnxplain.server.repository.config import ModelConfig, read_model_config
from onnxplain.server.repository.model import LoadedModel, ModelLoadError, ModelSource, sample_shape
from onnxplain.server.repository.safety import external_data_problem, model_file_problem, sort_nodes
from onnxplain.server.repository.signature import ModelSignature, read_signature
from onnxplain.server.repository.support import MethodChecks
from onnxplain.server.settings import ServerSettings

# Threads of loads abandoned past their time limit, by model file: kept to refuse a new load of the same version while
# one still runs.
_abandoned_loads: dict[Path, threading.Thread] = {}
_abandoned_loads_lock = threading.Lock()


def load_model(source: ModelSource, settings: ServerSettings) -> LoadedModel:
    """The model ready to serve, or ModelLoadError with the reason.

    The config is read first (its reading is bounded: repository/config.py); the rest runs on a daemon thread within
    the model's load time limit. A load that overruns (session creation or shape inference that does not end) is
    abandoned: the model is unavailable with the reason while the others serve, the thread finishes on its own and
    its result is dropped, and being a daemon it never keeps the process from exiting. Its session creation is
    cancelled (ONNX Runtime's load cancellation flag); shape inference cannot be, so until the thread ends a new load
    of the same version is refused: retries would otherwise pile threads up."""
    _refuse_beside_an_abandoned_load(source)
    try:
        config = read_model_config(source.model_dir)
    except Exception as error:
        raise ModelLoadError(f"{type(error).__name__}: {error}") from error
    seconds, setting = load_time_limit(config, settings)
    options = session_options(settings.intra_op_threads)
    # An abandoned load's session creation stops at ONNX Runtime's next check of the flag, ending its thread.
    cancel = functools.partial(options.set_load_cancellation_flag, True)
    return _within(seconds, setting, lambda: _load(source, config, settings, options), source, cancel)


def load_time_limit(config: ModelConfig, settings: ServerSettings) -> tuple[float, str]:
    """Seconds the model may take to load, and the setting that says so: the config may lower the server's."""
    if config.load_timeout_s is not None and config.load_timeout_s < settings.model_load_timeout_s:
        return config.load_timeout_s, "load_timeout_s in config.yaml"
    return settings.model_load_timeout_s, "--model-load-timeout-s"


def _refuse_beside_an_abandoned_load(source: ModelSource) -> None:
    with _abandoned_loads_lock:
        thread = _abandoned_loads.get(source.path)
        if thread is not None and not thread.is_alive():
            del _abandoned_loads[source.path]
            return
    if thread is not None:
        raise ModelLoadError(
            "the load abandoned earlier (past its time limit) is still running; "
            "a new load of this version starts only once it ends"
        )


def _within(
    seconds: float, setting: str, load: Callable[[], LoadedModel], source: ModelSource, cancel: Callable[[], None]
) -> LoadedModel:
    outcome: Future[LoadedModel] = Future()

    def run() -> None:
        try:
            outcome.set_result(load())
        except BaseException as error:  # handed to the waiting caller, whatever it is
            outcome.set_exception(error)

    thread_name = f"onnxplain-load-{shortened(source.name, 40)}:{source.version}"
    thread = threading.Thread(target=run, name=thread_name, daemon=True)
    thread.start()
    try:
        return outcome.result(timeout=seconds)
    except FutureTimeout:
        cancel()
        with _abandoned_loads_lock:
            _abandoned_loads[source.path] = thread
        raise ModelLoadError(f"load did not finish within {seconds:g} s ({setting}); it was abandoned") from None


def _load(
    source: ModelSource, config: ModelConfig, settings: ServerSettings, options: ort.SessionOptions
) -> LoadedModel:
    try:
        graph = _read_graph(source.path, settings)
        signature = read_signature(
            graph, input_name=config.input_name, output_name=config.output_name, layout=config.layout
        )
        config = _with_model_input(config, signature)
        _check_config_fits(config, signature)
        providers = choose_providers(settings.device, settings.device_id)
        policy = batching_policy(config, settings, providers)
        scheduler = RunScheduler(f"{source.name}:{source.version}", policy, batch_observer(source.name))
        session = ModelSession(
            source.path,
            providers=providers,
            threads=settings.intra_op_threads,
            input_name=signature.input.name,
            output_name=signature.output.name,
            fixed_batch=signature.fixed_batch,
            scheduler=scheduler,
            options=options,
        )
        signature = _warm_up(session, signature, config)
        num_classes = signature.num_classes
        _check_labels(config, num_classes)
        walk_problems = support_problems(
            graph, signature.input.name, signature.output.name, sample_shape(signature, config)
        )
        # Derived graphs come from the graph and weights read here, never from the file again.
        derived = DerivedGraphs(
            graph,
            weights_dir=source.path.parent,
            providers=providers,
            threads=settings.intra_op_threads,
            scheduler=scheduler,
            memory_limit=None if config.memory_budget_mb is None else config.memory_budget_mb * 1024 * 1024,
        )
        concurrent = config.max_concurrent_explanations or settings.max_concurrent_explanations
        return LoadedModel(
            source=source,
            config=config,
            signature=signature,
            session=session,
            num_classes=num_classes,
            derived=derived,
            explanations=ExplanationSlots(source.name, concurrent, settings.max_waiting_explanations),
            checks=MethodChecks(walk_problems),
        )
    except ModelLoadError:
        raise
    except Exception as error:
        raise ModelLoadError(f"{type(error).__name__}: {error}") from error


def batching_policy(config: ModelConfig, settings: ServerSettings, providers: list) -> BatchingPolicy:
    """The model's config.yaml first, then the server's flags, then the provider's batch cap."""
    batching = config.batching
    return BatchingPolicy(
        max_batch_size=batching.max_batch_size
        or config.max_batch_size
        or settings.max_batch_size
        or default_max_batch(providers),
        max_queue_delay_us=settings.batch_delay_us
        if batching.max_queue_delay_microseconds is None
        else batching.max_queue_delay_microseconds,
        max_queue_size=batching.max_queue_size or settings.max_queue_size,
        instances=config.instance_count or settings.instance_count,
    )


def _read_graph(path: Path, settings: ServerSettings) -> onnx.ModelProto:
    """The graph without its weights' external files, its nodes in topological order, after checking every file it
    makes the server read is safe (repository/safety.py): nothing is read from outside the model's folder, nothing
    beyond the size limit."""
    problem = model_file_problem(path, settings.model_repository, settings.max_model_bytes)
    if problem is not None:
        raise ModelLoadError(problem)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:
        raise ModelLoadError(f"{path.name} is not a readable ONNX model: {error}") from error
    problem = external_data_problem(model, path, settings.max_model_bytes) or sort_nodes(model.graph)
    if problem is not None:
        raise ModelLoadError(problem)
    return model


def _with_model_input(config: ModelConfig, signature: ModelSignature) -> ModelConfig:
    """Preprocessing that names no layout produces the layout the graph has; one that names no scale gives a float
    input pixels in [0, 1] and an integer input (its normalisation inside the graph) the pixels themselves."""
    spec = config.preprocessing
    if spec is None:
        return config
    layout = spec.layout or signature.layout
    scale = spec.scale
    if scale is None:
        scale = 1.0 if signature.input.is_integer else FLOAT_INPUT_SCALE
    return replace(config, preprocessing=replace(spec, layout=layout, scale=scale))


def _check_labels(config: ModelConfig, num_classes: int | None) -> None:
    if config.labels and num_classes is not None and len(config.labels) != num_classes:
        raise ModelLoadError(f"the config has {len(config.labels)} labels but the model outputs {num_classes} classes")


def _check_config_fits(config: ModelConfig, signature: ModelSignature) -> None:
    spec = config.preprocessing
    if spec is None:
        return
    if spec.layout != signature.layout:
        raise ModelLoadError(f"preprocessing.layout is {spec.layout} but the model's input is {signature.layout}")
    channels = signature.channels
    if channels is not None and channels != spec.channels:
        raise ModelLoadError(
            f"preprocessing.color {spec.color!r} gives {spec.channels} channel(s); the model wants {channels}"
        )
    produced = target_size(spec)
    expected = signature.spatial_size
    if produced and None not in expected and produced != expected:
        raise ModelLoadError(
            f"preprocessing produces {produced[0]}x{produced[1]} images; the model wants {expected[0]}x{expected[1]}"
        )
    if signature.input.is_integer:
        _check_integer_range(spec, signature.input.numpy_dtype)


def _check_integer_range(spec: PreprocessingSpec, dtype: np.dtype) -> None:
    """An integer input gets the preprocessed values rounded and clipped to its type: a float model's normalisation
    copied into its config would squeeze every image into a few values, so it is refused."""
    scale = np.float64(spec.scale)
    mean, std = np.asarray(spec.mean, dtype=np.float64), np.asarray(spec.std, dtype=np.float64)
    ends = (np.array([[0.0], [255.0]]) * scale - mean) / std
    low, high = float(ends.min()), float(ends.max())
    limits = np.iinfo(dtype)
    if low < limits.min or high > limits.max or high - low < 255:
        raise ModelLoadError(
            f"preprocessing maps pixels 0-255 to [{low:g}, {high:g}]; the model's {dtype.name} input ({limits.min} "
            f"to {limits.max}) would get them clipped or with pixel levels merged by rounding: for a model that "
            "normalises inside its graph, leave scale, mean and std out of config.yaml"
        )


def _warm_up(session: ModelSession, signature: ModelSignature, config: ModelConfig) -> ModelSignature:
    """Run one zero image when the input size is known: fails load early, and learns the output's shape (the number
    of classes, and the whole shape where the graph and shape inference leave it unknown)."""
    shape = sample_shape(signature, config)
    if shape is None:
        if not signature.output.shape:
            raise ModelLoadError(
                f"the graph does not declare the shape of output {signature.output.name!r} and shape inference "
                "cannot tell it; give the input size (preprocessing.resize [height, width] or center_crop in "
                "config.yaml) so one run at load can"
            )
        return signature
    output = session.run_output(np.zeros((1, *shape), dtype=np.float32))
    return signature.with_output_shape(output.shape)
