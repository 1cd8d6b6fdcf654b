"""Turn a model version on disk into a LoadedModel, or a clear reason why it cannot serve."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

from onnxplain.server.engine.admission import ExplanationSlots
from onnxplain.server.engine.backward.support import gradient_problem as find_gradient_problem
from onnxplain.server.engine.batching import default_max_batch
from onnxplain.server.engine.derived import DerivedGraphs
from onnxplain.server.engine.providers import choose_providers
from onnxplain.server.engine.scheduler import BatchingPolicy, RunScheduler
from onnxplain.server.engine.session import ModelSession
from onnxplain.server.imaging.layout import image_shape
from onnxplain.server.imaging.preprocess import target_size
from onnxplain.server.observability.metrics import batch_observer
from onnxplain.server.repository.config import ModelConfig, read_model_config
from onnxplain.server.repository.model import LoadedModel, ModelLoadError, ModelSource
from onnxplain.server.repository.safety import external_data_problem, model_file_problem
from onnxplain.server.repository.signature import ModelSignature, read_signature
from onnxplain.server.settings import ServerSettings


def load_model(source: ModelSource, settings: ServerSettings) -> LoadedModel:
    try:
        config = read_model_config(source.model_dir)
        graph = _read_graph(source.path, settings)
        signature = read_signature(
            graph, input_name=config.input_name, output_name=config.output_name, layout=config.layout
        )
        config = _with_model_layout(config, signature)
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
        )
        num_classes = _warm_up(session, signature, config)
        _check_labels(config, num_classes)
        gradient_problem = find_gradient_problem(graph, signature.input.name, signature.output.name)
    except ModelLoadError:
        raise
    except Exception as error:
        raise ModelLoadError(f"{type(error).__name__}: {error}") from error
    derived = DerivedGraphs(source.path, providers=providers, threads=settings.intra_op_threads, scheduler=scheduler)
    concurrent = config.max_concurrent_explanations or settings.max_concurrent_explanations
    return LoadedModel(
        source=source,
        config=config,
        signature=signature,
        session=session,
        num_classes=num_classes,
        derived=derived,
        explanations=ExplanationSlots(source.name, concurrent, settings.max_waiting_explanations),
        gradient_problem=gradient_problem,
    )


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
    """The graph without its weights' external files, after checking every file it makes the server read is safe
    (repository/safety.py): nothing is read from outside the model's folder, nothing beyond the size limit."""
    problem = model_file_problem(path, settings.model_repository, settings.max_model_bytes)
    if problem is not None:
        raise ModelLoadError(problem)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:
        raise ModelLoadError(f"{path.name} is not a readable ONNX model: {error}") from error
    problem = external_data_problem(model, path, settings.max_model_bytes)
    if problem is not None:
        raise ModelLoadError(problem)
    return model


def _with_model_layout(config: ModelConfig, signature: ModelSignature) -> ModelConfig:
    """Preprocessing that names no layout produces the layout the graph has."""
    spec = config.preprocessing
    if spec is None or spec.layout is not None:
        return config
    return replace(config, preprocessing=replace(spec, layout=signature.layout))


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


def _warm_up(session: ModelSession, signature: ModelSignature, config: ModelConfig) -> int | None:
    """Run one zero image when the input size is known: fails load early and learns the number of classes."""
    height, width = signature.spatial_size
    if (height is None or width is None) and config.preprocessing is not None:
        height, width = target_size(config.preprocessing) or (None, None)
    channels = signature.channels or (config.preprocessing.channels if config.preprocessing else None)
    if None in (height, width, channels):
        return signature.num_classes
    shape = image_shape(channels, height, width, signature.layout)
    scores = session.run(np.zeros((1, *shape), dtype=np.float32))
    return int(scores.shape[1])
