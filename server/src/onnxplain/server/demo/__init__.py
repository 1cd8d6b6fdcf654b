"""The embedded demo: a tiny handwritten-digits classifier and sample images, so the server can be tried offline.

``REPOSITORY`` is a model repository (``digits/config.yaml``, ``digits/labels.txt``, ``digits/1/model.onnx``);
``SAMPLES`` holds 112x112 PNGs (28x28 upscaled x4): ``digit_N_clean.png``, ``digit_N_strokes.png`` (a digit with
distracting strokes) and ``digit_N_strokes_mask.png`` (0 background, 1 digit, 2 stroke).
Regenerate them with ``server/demo/train_digits.py``.
"""

from pathlib import Path

__all__ = ["REPOSITORY", "SAMPLES"]

_HERE = Path(__file__).resolve().parent

REPOSITORY: Path = _HERE / "repository"
SAMPLES: Path = _HERE / "samples"
