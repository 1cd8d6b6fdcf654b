"""Which images an audit covers: a folder or a CSV of images, labels and boxes from CSVs, and every bad line found.

A CSV names its file column `path` or `image` (paths relative to the CSV's folder) and may add `label` (a class name
or index) and the four box columns `box_top,box_left,box_height,box_width` (pixels of the original image). A bad line
is reported with its file and line number and leaves its image out, so one typo does not sink the audit.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, replace
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
FILE_COLUMNS = ("path", "image")
BOX_COLUMNS = ("box_top", "box_left", "box_height", "box_width")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Box:
    """Pixels of the original image, like the server's Region boxes."""

    top: int
    left: int
    height: int
    width: int


@dataclass(frozen=True)
class AuditImage:
    key: str
    """The image's path relative to the source (folder or CSV folder), POSIX: its identity across resumed runs."""
    path: Path
    label: str | None = None
    """As written in the CSV: a class name or a class index; checked against the model by `check_labels`."""
    box: Box | None = None
    origin: str = ""
    """The CSV line that labelled the image, for problems found later."""

    @property
    def id(self) -> str:
        """File-name-safe and unique even when two images share a stem: the stem plus a hash of the key."""
        digest = hashlib.sha1(self.key.encode()).hexdigest()[:8]
        return f"{_UNSAFE.sub('_', Path(self.key).stem)[:60]}-{digest}"


@dataclass(frozen=True)
class Problem:
    where: str
    """`file:line`, or the file alone."""
    message: str


@dataclass(frozen=True)
class _Row:
    line: str
    path: Path
    label: str | None
    box: Box | None


def list_images(
    images: Path, labels: Path | None = None, exclude: Path | None = None
) -> tuple[list[AuditImage], list[Problem]]:
    """The images to audit (sorted by key) and the problems of the inputs, line by line. A folder's files below
    `exclude` (the audit's own output, which holds PNG overlays) are not listed."""
    if images.is_dir():
        found, problems = _folder(images, exclude), []
    elif images.is_file():
        found, problems = _images_csv(images)
    else:
        raise ValueError(f"--images {images}: no such folder or CSV file")
    if labels is not None:
        found, label_problems = _apply_labels(found, labels)
        problems += label_problems
    return sorted(found, key=lambda image: image.key), problems


def check_labels(images: list[AuditImage], class_names: list[str]) -> tuple[list[AuditImage], list[Problem]]:
    """Images whose label the model knows, the label turned into the model's class name; the rest as problems."""
    known, problems = [], []
    for image in images:
        if image.label is None:
            known.append(image)
            continue
        name = class_name(image.label, class_names)
        if name is None:
            message = f"{image.key}: unknown label {image.label!r}, not a class name or index of the model"
            problems.append(Problem(image.origin or image.key, message))
        else:
            known.append(replace(image, label=name))
    return known, problems


def class_name(label: str, class_names: list[str]) -> str | None:
    if label in class_names:
        return label
    if label.strip().isdigit() and int(label) < len(class_names):
        return class_names[int(label)]
    return None


def _folder(folder: Path, exclude: Path | None) -> list[AuditImage]:
    skipped = None if exclude is None else exclude.resolve()
    files = (path for path in folder.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())
    return [
        AuditImage(key=path.relative_to(folder).as_posix(), path=path)
        for path in files
        if skipped is None or not path.resolve().is_relative_to(skipped)
    ]


def _images_csv(table: Path) -> tuple[list[AuditImage], list[Problem]]:
    images: dict[Path, AuditImage] = {}
    rows, problems = _read_rows(table)
    for row in rows:
        if not row.path.is_file():
            problems.append(Problem(row.line, f"{row.path}: no such file"))
        elif row.path in images:
            problems.append(Problem(row.line, f"{row.path} is listed twice"))
        else:
            key = _key(row.path, table.parent)
            images[row.path] = AuditImage(key=key, path=row.path, label=row.label, box=row.box, origin=row.line)
    return list(images.values()), problems


def _apply_labels(images: list[AuditImage], table: Path) -> tuple[list[AuditImage], list[Problem]]:
    by_path = {image.path.resolve(): image for image in images}
    labelled: dict[Path, AuditImage] = {}
    rows, problems = _read_rows(table)
    for row in rows:
        resolved = row.path.resolve()
        if resolved not in by_path:
            problems.append(Problem(row.line, f"{row.path}: not among the audited images"))
        elif resolved in labelled:
            problems.append(Problem(row.line, f"{row.path} is labelled twice"))
        else:
            image = by_path[resolved]
            labelled[resolved] = replace(
                image, label=row.label or image.label, box=row.box or image.box, origin=row.line
            )
    return [labelled.get(path, image) for path, image in by_path.items()], problems


def _read_rows(table: Path) -> tuple[list[_Row], list[Problem]]:
    with table.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        fields = [name.strip() for name in reader.fieldnames or []]
        reader.fieldnames = fields
        file_column = next((name for name in FILE_COLUMNS if name in fields), None)
        if file_column is None:
            raise ValueError(f"{table}: the header needs a {' or '.join(FILE_COLUMNS)} column, got {fields}")
        rows, problems = [], []
        for record in reader:
            line = f"{table}:{reader.line_num}"
            try:
                rows.append(_row(line, table.parent, record, file_column))
            except ValueError as error:
                problems.append(Problem(line, str(error)))
    return rows, problems


def _row(line: str, folder: Path, record: dict[str, str | None], file_column: str) -> _Row:
    name = (record.get(file_column) or "").strip()
    if not name:
        raise ValueError(f"empty {file_column}")
    label = (record.get("label") or "").strip() or None
    return _Row(line=line, path=folder / name, label=label, box=_box(record))


def _box(record: dict[str, str | None]) -> Box | None:
    cells = [(record.get(column) or "").strip() for column in BOX_COLUMNS]
    if not any(cells):
        return None
    if not all(cells):
        raise ValueError(f"a box needs all of {', '.join(BOX_COLUMNS)}")
    try:
        top, left, height, width = (int(cell) for cell in cells)
    except ValueError:
        raise ValueError(f"box values must be whole pixels, got {', '.join(cells)}") from None
    if top < 0 or left < 0 or height <= 0 or width <= 0:
        raise ValueError(f"box top/left must be >= 0 and height/width > 0, got {', '.join(cells)}")
    return Box(top, left, height, width)


def _key(path: Path, root: Path) -> str:
    """Relative to the CSV's folder when the image lies below it, else the absolute path."""
    resolved, base = path.resolve(), root.resolve()
    return resolved.relative_to(base).as_posix() if resolved.is_relative_to(base) else resolved.as_posix()
