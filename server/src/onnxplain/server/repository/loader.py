"""Turn a model version on disk into a LoadedModel, or a clear reason why it cannot serve."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from onnx.external_data_helper import uses_external_data

from onnxplain.server.engine.backward.support import gradient_problem as find_gradient_problem
from onnxplain.server.engine.derived import DerivedGraphs
from onnxplain.server.engine.providers import choose_providers
from onnxplain.server.engine.session import ModelSession
from onnxplain.server.imaging.preprocess import target_size
from onnxplain.server.repository.config import ModelConfig, read_model_config
from onnxplain.server.repository.model import LoadedModel, ModelSource
from onnxplain.server.repository.signature import ModelSignature, read_signature
from onnxplain.server.settings import ServerSettings


class ModelLoadError(Exception):
    """The model cannot serve; the message is shown as the model's unavailability reason."""


def load_model(source: ModelSource, settings: ServerSettings) -> LoadedModel:
    try:
        config = read_model_config(source.model_dir)
        graph = _read_graph(source.path)
        signature = read_signature(
            graph, input_name=config.input_name, output_name=config.output_name, layout=config.layout
        )
        config = _with_model_layout(config, signature)
        _check_config_fits(config, signature)
        providers = choose_providers(settings.device, settings.device_id)
        session = ModelSession(
            source.path,
            providers=providers,
            threads=settings.intra_op_threads,
            input_name=signature.input.name,
            output_name=signature.output.name,
            fixed_batch=signature.fixed_batch,
        )
        num_classes = _warm_up(session, signature, config)
        _check_labels(config, num_classes)
        gradient_problem = find_gradient_problem(graph, signature.input.name, signature.output.name)
    except ModelLoadError:
        raise
    except Exception as error:
        raise ModelLoadError(f"{type(error).__name__}: {error}") from error
    derived = DerivedGraphs(source.path, providers=providers, threads=settings.intra_op_threads)
    return LoadedModel(
        source=source,
        config=config,
        signature=signature,
        session=session,
        num_classes=num_classes,
        derived=derived,
        gradient_problem=gradient_problem,
    )


def _read_graph(path: Path) -> onnx.ModelProto:
    """The graph without its weights' external files, after checking those files lie inside the model folder."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:
        raise ModelLoadError(f"{path.name} is not a readable ONNX model: {error}") from error
    folder = path.parent.resolve()
    for tensor in _all_initializers(model):
        if not uses_external_data(tensor):
            continue
        location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
        target = (folder / location).resolve()
        if Path(location).is_absolute() or folder not in target.parents:
            raise ModelLoadError(f"initializer {tensor.name!r} points outside the model folder ({location!r})")
    return model


def _all_initializers(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    tensors = list(model.graph.initializer)
    tensors += [attr.t for node in model.graph.node for attr in node.attribute if attr.HasField("t")]
    return tensors


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
    shape = (channels, height, width) if signature.layout == "NCHW" else (height, width, channels)
    scores = session.run(np.zeros((1, *shape), dtype=np.float32))
    return int(scores.shape[1])
