"""RISE in one ONNX graph: masks, blend, the model and the score-weighted accumulation in one ONNX Runtime run.

The derived graph takes the image, the fill, each mask's low-resolution grid with its row and column interpolation
matrices (rise_masks.interpolation_matrices: the upsampling with the random crop folded in, a few kilobytes per
batch) and the target indices, and returns the batch's (T, H*W) score-weighted mask sums and (H*W,) mask sums. So
ONNX Runtime's own threads build the masked images, and on a GPU nothing crosses the bus but the grids and the sums.
Only standard ai.onnx ops that the CUDA provider registers at opsets 11-18 (MatMul, Reshape, Sub, Mul, Add, Softmax,
Gather, Transpose, ReduceSum) are added, so the CUDA provider runs the whole graph: on an H100 (onnxruntime-gpu
1.31.1) every node of the RISE graphs of MobileNetV3 and ResNet-50 ran on it (bench/placement.py, RESULTS.md). From
opset 19 on, Reshape and Transpose get versions older CUDA builds lack (shared/reference/onnx-backward.md §6).
The batch axis is dynamic: one graph serves every batch size; image size and grid size are fixed per graph and part
of its cache key.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxplain.server.engine.pinned import bucket_rows
from onnxplain.server.engine.providers import CUDA, first_provider
from onnxplain.server.errors import FailedPrecondition
from onnxplain.server.imaging.layout import spatial_size
from onnxplain.server.imaging.spec import Layout
from onnxplain.server.methods.base import ExplainJob
from onnxplain.server.methods.rise_masks import interpolation_matrices
from onnxplain.server.repository.model import LoadedModel

Execution = Literal["auto", "host", "graph"]

# Which path "auto" takes on the CPU provider: the host. bench/perturbation.py, three full runs on a 2-core AMD EPYC
# (ONNX Runtime 1.31 CPU provider, OMP_NUM_THREADS=1; in the first two the derived session's threads did not spin),
# RISE time over plain forwards, host (b/a) vs graph (b'/a):
#   MobileNetV3 224x224, 1024 masks: 1.209 vs 1.261, 1.073 vs 1.172, 1.077 vs 1.196;
#   ResNet-50 224x224, 128 masks:    1.088 vs 1.121, 1.012 vs 1.115, 0.978 vs 1.058.
# The host builds a batch's masked images in about 1 ms (numpy, helper thread) against 50 ms for the batch's
# forwards; in the graph, the blend runs inside the run (about 5% of MobileNetV3's), and the first batch pays for
# switching from the main session's thread pool to the derived session's (engine/derived.py). On CUDA the graph
# saves moving every masked batch to the device, so "auto" takes it there.
CPU_RUNS_IN_GRAPH = False

# Graph inputs in the order the derived graph declares them; its outputs are the weighted sums, then the mask sums.
INPUTS = ("image", "fill", "row_weights", "grids", "col_weights", "targets")
_PREFIX = "onnxplain_rise/"
_REDUCE_AXES_AS_INPUT = 13  # ReduceSum takes its axes as an input from this opset, as an attribute before


@dataclass(frozen=True)
class RiseGraphSpec:
    """What fixes a derived RISE graph, and its cache key."""

    input_name: str
    output_name: str
    layout: Layout
    image_shape: tuple[int, int, int]  # one image in the model's layout
    grid_size: int
    softmax: bool  # scores in probability space from a model that outputs logits

    @property
    def size(self) -> tuple[int, int]:
        return spatial_size(self.image_shape, self.layout)


def graph_unsupported_reason(model: LoadedModel) -> str | None:
    """Why the in-graph path cannot serve this model, or None. The added ops are float32 only."""
    for role, spec in (("input", model.signature.input), ("output", model.signature.output)):
        if spec.dtype != "float":
            return f"its {role} is {spec.dtype}; the in-graph path needs float32"
    return None


def runs_in_graph(job: ExplainJob, execution: Execution) -> bool:
    """Whether a RISE request takes the in-graph path: always on CUDA, on the CPU by measurement (CPU_RUNS_IN_GRAPH),
    and never where the graph path cannot serve the model."""
    if execution == "host":
        return False
    reason = graph_unsupported_reason(job.model)
    if execution == "graph":
        if reason:
            raise FailedPrecondition(f"RISE cannot run in one graph on model {job.model.name!r}: {reason}")
        return True
    return reason is None and (first_provider(job.model.session.providers) == CUDA or CPU_RUNS_IN_GRAPH)


class RiseGraph:
    """A job's derived RISE graph (built once per model and spec, then shared) and how to feed it."""

    def __init__(self, job: ExplainJob, grid_size: int, fill: np.ndarray, probability: bool) -> None:
        signature = job.model.signature
        self.job = job
        self.spec = RiseGraphSpec(
            input_name=signature.input.name,
            output_name=signature.output.name,
            layout=signature.layout,
            image_shape=tuple(job.image.shape),
            grid_size=grid_size,
            softmax=probability and job.model.output_kind != "probabilities",
        )
        self.session = job.model.derived_session(
            self.spec, functools.partial(build_rise_graph, spec=self.spec), job.scorer.token
        )
        # The derived graph declares its inputs first, in INPUTS order (a model of IR < 4 lists weights after them).
        self.input_names = dict(zip(INPUTS, self.session.input_names[: len(INPUTS)], strict=True))
        self.fixed_batch = signature.fixed_batch
        self.constant_feed = {
            "image": np.ascontiguousarray(job.image, dtype=np.float32),
            "fill": np.ascontiguousarray(fill, dtype=np.float32),
            "targets": job.scorer.targets,
        }

    def feed(self, grids: np.ndarray, shifts: np.ndarray) -> dict[str, np.ndarray]:
        """The per-batch inputs for (n, s, s) grids and their (n, 2) shifts."""
        rows, cols = interpolation_matrices(shifts, self.spec.size, self.spec.grid_size)
        return {"row_weights": rows, "grids": grids, "col_weights": np.ascontiguousarray(cols.transpose(0, 2, 1))}

    def run(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(T, H*W) sum of score-weighted masks and (H*W,) sum of masks over the batch, float64, counting the passes
        in the job's scorer. A fixed-batch model runs in chunks of its size; a short last chunk is padded with empty
        masks, which add nothing to either sum. On a session pinned to its shapes (CUDA, engine/pinned.py) a batch is
        padded to a power of two or the job's batch size, so RISE keeps to a few shapes whatever the number of masks."""
        count = len(feed["grids"])
        step = self.fixed_batch or (
            min(bucket_rows(count), max(count, self.job.batch_size)) if self.session.pins_shapes else count
        )
        weighted, mask_sum = 0.0, 0.0
        for start in range(0, count, step):
            chunk = {role: _padded(array[start : start + step], step) for role, array in feed.items()}
            named = {self.input_names[role]: value for role, value in {**self.constant_feed, **chunk}.items()}
            chunk_weighted, chunk_mask_sum = self.session.run(named, self.job.scorer.token)
            self.job.scorer.passes.record_forward(self.session, min(step, count - start))
            weighted = weighted + chunk_weighted.astype(np.float64)
            mask_sum = mask_sum + chunk_mask_sum.astype(np.float64)
        return weighted, mask_sum


def _padded(array: np.ndarray, size: int) -> np.ndarray:
    missing = size - len(array)
    return array if missing == 0 else np.concatenate([array, np.zeros((missing, *array.shape[1:]), array.dtype)])


def build_rise_graph(model: onnx.ModelProto, spec: RiseGraphSpec) -> onnx.ModelProto:
    """The model wrapped into the RISE graph (modified in place): the model's image input becomes the blended
    batch, its score output feeds the accumulation."""
    graph = model.graph
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    prefix = _unused_prefix(graph)

    def name(local: str) -> str:
        return prefix + local

    height, width = spec.size
    grid_size, channels_last = spec.grid_size, spec.layout == "NHWC"
    inputs = [
        helper.make_tensor_value_info(name("image"), TensorProto.FLOAT, spec.image_shape),
        helper.make_tensor_value_info(name("fill"), TensorProto.FLOAT, spec.image_shape),
        helper.make_tensor_value_info(name("row_weights"), TensorProto.FLOAT, ["masks", height, grid_size]),
        helper.make_tensor_value_info(name("grids"), TensorProto.FLOAT, ["masks", grid_size, grid_size]),
        helper.make_tensor_value_info(name("col_weights"), TensorProto.FLOAT, ["masks", grid_size, width]),
        helper.make_tensor_value_info(name("targets"), TensorProto.INT64, ["targets"]),
    ]
    outputs = [
        helper.make_tensor_value_info(name("weighted"), TensorProto.FLOAT, ["targets", height * width]),
        helper.make_tensor_value_info(name("mask_sum"), TensorProto.FLOAT, [height * width]),
    ]
    constants = {
        "mask_layout_shape": [-1, height, width, 1] if channels_last else [-1, 1, height, width],
        "flat_mask_shape": [-1, height * width],
        "score_shape": [0, -1],
        "mask_axis": [0],
    }
    initializers = [numpy_helper.from_array(np.asarray(v, np.int64), name(k)) for k, v in constants.items()]

    blend = [
        helper.make_node("MatMul", [name("row_weights"), name("grids")], [name("rows_by_grid")]),
        helper.make_node("MatMul", [name("rows_by_grid"), name("col_weights")], [name("masks")]),
        helper.make_node("Reshape", [name("masks"), name("mask_layout_shape")], [name("masks_in_layout")]),
        # fill + M * (x - fill) == x * M + fill * (1 - M), as the host path computes it.
        helper.make_node("Sub", [name("image"), name("fill")], [name("difference")]),
        helper.make_node("Mul", [name("masks_in_layout"), name("difference")], [name("masked_difference")]),
        helper.make_node("Add", [name("masked_difference"), name("fill")], [spec.input_name]),
    ]
    scores = name("scores")
    accumulate = [helper.make_node("Reshape", [spec.output_name, name("score_shape")], [scores])]
    if spec.softmax:
        accumulate.append(helper.make_node("Softmax", [scores], [name("probabilities")], axis=1))
        scores = name("probabilities")
    if opset >= _REDUCE_AXES_AS_INPUT:
        mask_sum = helper.make_node(
            "ReduceSum", [name("flat_masks"), name("mask_axis")], [name("mask_sum")], keepdims=0
        )
    else:
        mask_sum = helper.make_node("ReduceSum", [name("flat_masks")], [name("mask_sum")], axes=[0], keepdims=0)
    accumulate += [
        helper.make_node("Gather", [scores, name("targets")], [name("target_scores")], axis=1),
        helper.make_node("Transpose", [name("target_scores")], [name("scores_by_target")], perm=[1, 0]),
        helper.make_node("Reshape", [name("masks"), name("flat_mask_shape")], [name("flat_masks")]),
        helper.make_node("MatMul", [name("scores_by_target"), name("flat_masks")], [name("weighted")]),
        mask_sum,
    ]

    model_inputs = [value for value in graph.input if value.name != spec.input_name]
    model_nodes = list(graph.node)
    del graph.input[:], graph.output[:], graph.node[:]
    graph.input.extend(inputs + model_inputs)
    graph.output.extend(outputs)
    graph.node.extend(blend + model_nodes + accumulate)
    graph.initializer.extend(initializers)
    return model


def _unused_prefix(graph: onnx.GraphProto) -> str:
    """A name prefix no tensor or node of the model uses, so added names cannot collide."""
    names = {value.name for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer)}
    for node in graph.node:
        names.update((node.name, *node.input, *node.output))
    prefix = _PREFIX
    while any(existing.startswith(prefix) for existing in names):
        prefix = "_" + prefix
    return prefix
