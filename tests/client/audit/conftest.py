"""A few hundred digit images made from the demo samples (shifted, noisy), with labels, boxes and broken inputs.

(Fixtures only: with --import-mode=importlib, test modules cannot import from a conftest.)
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
from support.servers import RunningServer, run_cli, running

from onnxplain.server.demo import REPOSITORY, SAMPLES

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SOURCES = [  # (sample, digit, mask or None)
    ("digit_3_clean", 3, None),
    ("digit_4_strokes", 4, "digit_4_strokes_mask"),
    ("digit_6_clean", 6, None),
    ("digit_6_strokes", 6, "digit_6_strokes_mask"),
    ("digit_7_strokes", 7, "digit_7_strokes_mask"),
    ("digit_8_clean", 8, None),
]
IMAGE_COUNT = 240
METHODS = ("grad_cam", "occlusion")
AUDIT_OPTIONS = [
    "--model",
    "digits",
    "--methods",
    "grad_cam,occlusion",
    "--param",
    "occlusion.window=7,7",
    "--param",
    "occlusion.stride=7,7",
    "--metrics",
    "deletion,insertion",
    "--concurrency",
    "3",
    "--timeout",
    "60",
]


@dataclass
class Dataset:
    root: Path
    images: Path
    labels: Path
    digits: dict[str, int] = field(default_factory=dict)
    """Digit drawn in each decodable image, by key (path relative to `images`)."""
    labelled: dict[str, int] = field(default_factory=dict)
    """Class index each labels.csv line gives, by key (only lines without a problem)."""
    boxes: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    corner_boxes: set[str] = field(default_factory=set)
    """Keys whose box lies in an empty corner, away from the digit."""
    broken: set[str] = field(default_factory=set)
    """Keys of files that are not images (listed from the folder, skipped by the audit)."""
    excluded: set[str] = field(default_factory=set)
    """Keys left out of the audit for a problem in labels.csv."""
    problem_lines: dict[int, str] = field(default_factory=dict)
    """labels.csv line number -> a word the problem's message contains."""

    def audit_command(self, server: str, out: Path) -> list[str]:
        return [
            "audit",
            "--server",
            server,
            *AUDIT_OPTIONS,
            "--images",
            str(self.images),
            "--labels",
            str(self.labels),
            "--out",
            str(out),
        ]


def make_dataset(root: Path, count: int = IMAGE_COUNT) -> Dataset:
    rng = np.random.default_rng(5)
    images = root / "images"
    (images / "again").mkdir(parents=True)
    dataset = Dataset(root=root, images=images, labels=root / "labels.csv")
    rows = [["image", "label", "box_top", "box_left", "box_height", "box_width"]]
    for index in range(count):
        sample, digit, mask_name = SOURCES[index % len(SOURCES)]
        picture = cv2.imread(str(SAMPLES / f"{sample}.png"), cv2.IMREAD_GRAYSCALE)
        digit_mask = (
            cv2.imread(str(SAMPLES / f"{mask_name}.png"), cv2.IMREAD_GRAYSCALE) == 1 if mask_name else picture > 64
        )
        shift = rng.integers(-3, 4, size=2) * 4  # whole model pixels (the model sees the image at 1/4 size)
        picture = np.roll(picture, tuple(shift), axis=(0, 1))
        digit_mask = np.roll(digit_mask, tuple(shift), axis=(0, 1))
        noisy = np.clip(picture + rng.normal(0, 12, picture.shape), 0, 255).astype(np.uint8)
        # Every 40th image shares its stem with an earlier one, in a subfolder: the outputs must not collide.
        twin = index % 40 == 39
        path = images / "again" / f"{sample}_{index - 39:03d}.png" if twin else images / f"{sample}_{index:03d}.png"
        assert cv2.imwrite(str(path), noisy)
        key = path.relative_to(images).as_posix()
        dataset.digits[key] = digit
        row = [f"images/{key}", _label(index, digit), "", "", "", ""]
        if index % 3 == 0:
            box = _corner_box(digit_mask) if index % 12 == 0 else _bounding_box(digit_mask)
            row[2:] = [str(value) for value in box]
            dataset.boxes[key] = box
            if index % 12 == 0:
                dataset.corner_boxes.add(key)
        if index == 1:  # half a box: the line is reported and the image audited without a label
            row[2:] = ["8", "8", "", ""]
            dataset.problem_lines[len(rows) + 1] = "a box needs all of"
        elif index == 2:  # a label the model does not have: reported, and the image left out
            row[1] = "banana"
            dataset.problem_lines[len(rows) + 1] = "unknown label 'banana'"
            dataset.excluded.add(key)
        elif row[1]:
            dataset.labelled[key] = int(row[1]) if row[1].isdigit() else DIGIT_NAMES.index(row[1])
        rows.append(row)
    rows.append(["images/missing.png", "three", "", "", "", ""])
    dataset.problem_lines[len(rows)] = "not among the audited images"
    rows.append([rows[1][0], "four", "", "", "", ""])
    dataset.problem_lines[len(rows)] = "labelled twice"
    with dataset.labels.open("w", newline="") as file:
        csv.writer(file).writerows(rows)
    broken = {"broken.png": b"this is not an image", "truncated.jpg": (SAMPLES / "digit_3_clean.png").read_bytes()[:80]}
    for name, data in broken.items():
        (images / name).write_bytes(data)
        dataset.broken.add(name)
    return dataset


def _label(index: int, digit: int) -> str:
    """Most labels right (as a name or an index), every 11th wrong, every 7th missing."""
    if index % 7 == 6:
        return ""
    if index % 11 == 5:
        return DIGIT_NAMES[(digit + 1) % 10]
    return str(digit) if index % 2 else DIGIT_NAMES[digit]


def _bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The digit's box grown to whole model pixels (multiples of 4)."""
    rows, columns = np.nonzero(mask)
    top, left = rows.min() // 4 * 4, columns.min() // 4 * 4
    bottom, right = -(-(rows.max() + 1) // 4) * 4, -(-(columns.max() + 1) // 4) * 4
    return int(top), int(left), int(bottom - top), int(right - left)


def _corner_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """A 16x16 box in the corner farthest from the digit."""
    rows, columns = np.nonzero(mask)
    top = 0 if rows.mean() > mask.shape[0] / 2 else mask.shape[0] - 16
    left = 0 if columns.mean() > mask.shape[1] / 2 else mask.shape[1] - 16
    return top, left, 16, 16


@pytest.fixture(scope="session")
def audit_server() -> Iterator[RunningServer]:
    with running(REPOSITORY) as server:
        yield server


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return make_dataset(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="session")
def finished_audit(dataset: Dataset, audit_server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One complete audit of the dataset; tests read its output but must not change it (copy it first)."""
    out = tmp_path_factory.mktemp("audit")
    result = run_cli(*dataset.audit_command(audit_server.target, out))
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def audit_copy(finished_audit: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "audit"
    shutil.copytree(finished_audit, copy)
    return copy
