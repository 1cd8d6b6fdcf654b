"""Choose ONNX Runtime execution providers without printing errors on machines that lack a GPU.

onnxruntime-gpu lists CUDAExecutionProvider even where no GPU or CUDA library exists; creating a session with it
then logs errors and silently falls back. We probe once with a one-op model and logging turned off, and report
what really loaded.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

if TYPE_CHECKING:  # settings imports engine/batching, which imports this module
    from onnxplain.server.settings import Device

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
_SILENT = 4


@functools.cache
def cuda_usable(device_id: int = 0) -> bool:
    """True when a CUDA session really starts on this machine (not just when the wheel lists the provider)."""
    if CUDA not in ort.get_available_providers():
        return False
    options = ort.SessionOptions()
    options.log_severity_level = _SILENT
    ort.set_default_logger_severity(_SILENT)
    try:
        session = ort.InferenceSession(_probe_model(), options, providers=[(CUDA, {"device_id": device_id}), CPU])
        return CUDA in session.get_providers()
    except Exception:
        return False
    finally:
        ort.set_default_logger_severity(3)


def first_provider(providers: Sequence[str | tuple[str, dict]]) -> str | None:
    """The name of the provider ONNX Runtime tries first: providers come as names (a session's get_providers()) or
    as (name, options) pairs (what choose_providers gives a new session)."""
    if not providers:
        return None
    first = providers[0]
    return first[0] if isinstance(first, tuple) else first


def choose_providers(device: Device, device_id: int = 0) -> list[str | tuple[str, dict]]:
    """Providers in priority order for the requested device; raises RuntimeError if CUDA is required but absent."""
    if device == "cpu":
        return [CPU]
    if cuda_usable(device_id):
        return [(CUDA, {"device_id": device_id}), CPU]
    if device == "cuda":
        raise RuntimeError("--device cuda was requested but the CUDA execution provider cannot start on this machine")
    return [CPU]


def _probe_model() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "cuda_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()
