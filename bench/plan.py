"""How much work each row does: the full run sized to finish in minutes on a 2-core CPU, --quick in seconds, and the
GPU run (--device cuda) at the sizes users ask for: RISE with 4000 masks, occlusion 16x16 stride 8, 50 steps.

ONNX Runtime runs a ResNet-50 at about 25 images/s on these 2 cores and a MobileNetV3 at about 300 (RESULTS.md),
so the 224x224 models run fewer masks, windows and calls than a user would ask for; the scaling rows show that time
grows linearly in passes, so the ratios hold at any count.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from models import DIGITS, BenchModel


@dataclass(frozen=True)
class Plan:
    repeat: int
    # Timed runs per round of a call that takes milliseconds (single saliency, Grad-CAM ... calls).
    short_runs: int
    # The limit runs plain forwards at the fastest of these batch sizes, each run for `selection_seconds` per trial.
    batch_sizes: tuple[int, ...]
    selection_seconds: float
    # Row 1: RISE (model, masks); occlusion (model, window, stride).
    rise: tuple[tuple[BenchModel, int], ...]
    occlusion: tuple[tuple[BenchModel, int, int], ...]
    # Row 2: the gradient methods on these models, with integrated gradients' steps on each.
    gradient_models: tuple[tuple[BenchModel, int], ...]
    # Row 3: RISE for every class (model, masks); every class's gradient (active saliency) on these models; how
    # many single-target calls are timed to stand for K of them.
    all_classes_rise: tuple[tuple[BenchModel, int], ...]
    all_classes_gradients: tuple[BenchModel, ...]
    # Row 4: RISE (model, masks) and one saliency call through gRPC and in this process.
    transport_rise: tuple[tuple[BenchModel, int], ...]
    transport_saliency: tuple[BenchModel, ...]
    # Row 5: throughput of `clients` threads for `window` seconds per variant and round, on this model.
    concurrency_model: BenchModel
    clients: int
    window: float
    batch_delays_us: tuple[int, ...]
    # Row 6: RISE with `scaling_masks` masks and one saliency call at each size; RISE by mask count and integrated
    # gradients by steps on the scaling model.
    scaling_sizes: tuple[BenchModel, ...]
    scaling_masks: int
    mask_counts: tuple[int, ...]
    step_counts: tuple[int, ...]


def _mobilenet(size: int) -> BenchModel:
    return BenchModel("mobilenet_v3", size)


MOBILENET = _mobilenet(224)
RESNET = BenchModel("resnet50", 224)


def _tiny(size: int, classes: int = 10) -> BenchModel:
    return BenchModel("tiny_cnn", size, classes)


TINY = _tiny(32)

FULL = Plan(
    repeat=3,
    short_runs=3,
    batch_sizes=(1, 4, 8, 16),
    selection_seconds=0.1,
    rise=((DIGITS, 4000), (MOBILENET, 128), (RESNET, 24)),
    occlusion=((DIGITS, 16, 8), (MOBILENET, 16, 16), (RESNET, 56, 56)),
    gradient_models=((DIGITS, 50), (MOBILENET, 50), (RESNET, 16)),
    all_classes_rise=((DIGITS, 1000), (MOBILENET, 128)),
    all_classes_gradients=(DIGITS, _mobilenet(112)),
    transport_rise=((DIGITS, 4000), (MOBILENET, 128)),
    transport_saliency=(MOBILENET, RESNET),
    concurrency_model=MOBILENET,
    clients=32,
    window=1.5,
    batch_delays_us=(0, 2000),
    scaling_sizes=(_mobilenet(112), MOBILENET, _mobilenet(448)),
    scaling_masks=96,
    mask_counts=(32, 64, 128, 256),
    step_counts=(8, 16, 32, 64),
)

QUICK = Plan(
    repeat=1,
    short_runs=1,
    batch_sizes=(1, 4, 8, 16),
    selection_seconds=0.01,
    rise=((DIGITS, 64), (TINY, 64)),
    occlusion=((DIGITS, 16, 8), (TINY, 8, 4)),
    gradient_models=((TINY, 8),),
    all_classes_rise=((DIGITS, 32), (_tiny(32, 1000), 32)),
    all_classes_gradients=(DIGITS, _tiny(16, 1000)),
    transport_rise=((DIGITS, 64),),
    transport_saliency=(TINY,),
    concurrency_model=TINY,
    clients=4,
    window=0.2,
    batch_delays_us=(2000,),
    scaling_sizes=(_tiny(16), TINY),
    scaling_masks=32,
    mask_counts=(16,),
    step_counts=(4,),
)

# An H100 runs a ResNet-50 forward at thousands of images/s: full-size work, more rounds, GPU-sized batches.
GPU = dataclasses.replace(
    FULL,
    repeat=5,
    short_runs=10,
    batch_sizes=(16, 32, 64, 128, 256),
    selection_seconds=0.2,
    rise=((DIGITS, 4000), (MOBILENET, 4000), (RESNET, 4000)),
    occlusion=((DIGITS, 4, 2), (MOBILENET, 16, 8), (RESNET, 16, 8)),
    gradient_models=((DIGITS, 50), (MOBILENET, 50), (RESNET, 50)),
    all_classes_rise=((DIGITS, 4000), (MOBILENET, 1000)),
    all_classes_gradients=(DIGITS, MOBILENET),
    transport_rise=((DIGITS, 4000), (RESNET, 4000)),
    concurrency_model=RESNET,
    scaling_masks=1000,
    mask_counts=(500, 1000, 2000, 4000),
    step_counts=(16, 32, 64, 128),
)
