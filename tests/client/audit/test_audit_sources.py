"""Which images an audit covers, and how bad CSV lines are reported: line by line, leaving only their image out."""

from pathlib import Path

import pytest

from onnxplain.client.audit.sources import Box, check_labels, list_images

CLASSES = ["cat", "dog", "bird"]


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_a_folder_lists_its_image_files_below_it_sorted(tmp_path):
    for name in ("b.PNG", "a.jpg", "sub/a.jpg", "c.jpeg", "d.bmp", "e.webp", "notes.txt", "f.gif"):
        touch(tmp_path / name)
    images, problems = list_images(tmp_path)
    assert [image.key for image in images] == ["a.jpg", "b.PNG", "c.jpeg", "d.bmp", "e.webp", "sub/a.jpg"]
    assert problems == []
    assert all(image.label is None and image.box is None for image in images)


def test_the_audits_own_output_inside_the_folder_is_not_listed(tmp_path):
    touch(tmp_path / "a.png")
    touch(tmp_path / "audit/overlays/a-1234.grad_cam.png")
    images, _ = list_images(tmp_path, exclude=tmp_path / "audit")
    assert [image.key for image in images] == ["a.png"]


def test_ids_are_unique_and_safe_for_file_names_even_for_twin_stems(tmp_path):
    for name in ("a.jpg", "sub/a.jpg", "a.png", "we ird/ü name.png"):
        touch(tmp_path / name)
    images, _ = list_images(tmp_path)
    ids = [image.id for image in images]
    assert len(set(ids)) == len(ids) == 4
    assert all(part.isascii() and "/" not in part and " " not in part for part in ids)
    # Stable across runs: the id depends on the key only.
    assert ids == [image.id for image in list_images(tmp_path)[0]]


def test_an_images_csv_gives_paths_relative_to_itself_labels_and_boxes(tmp_path):
    touch(tmp_path / "data/x.png")
    touch(tmp_path / "data/y.png")
    table = tmp_path / "data/list.csv"
    table.write_text("path,label,box_top,box_left,box_height,box_width\nx.png,dog,1,2,3,4\ny.png,,,,,\n")
    images, problems = list_images(table)
    assert problems == []
    assert [(image.key, image.label, image.box) for image in images] == [
        ("x.png", "dog", Box(1, 2, 3, 4)),
        ("y.png", None, None),
    ]
    assert images[0].path == tmp_path / "data/x.png"


def test_bad_csv_lines_are_reported_with_their_line_and_leave_their_image_out(tmp_path):
    for name in ("ok.png", "twice.png", "halfbox.png", "badbox.png", "negative.png"):
        touch(tmp_path / name)
    table = tmp_path / "list.csv"
    table.write_text(
        "image,label,box_top,box_left,box_height,box_width\n"
        "ok.png,cat,,,,\n"
        "missing.png,cat,,,,\n"
        "twice.png,,,,,\n"
        "twice.png,,,,,\n"
        "halfbox.png,,1,2,,\n"
        "badbox.png,,1,2,3,x\n"
        "negative.png,,1,2,0,4\n"
        ",dog,,,,\n"
    )
    images, problems = list_images(table)
    assert [image.key for image in images] == ["ok.png", "twice.png"]
    found = {problem.where: problem.message for problem in problems}
    assert sorted(found) == [f"{table}:{line}" for line in (3, 5, 6, 7, 8, 9)]
    assert "no such file" in found[f"{table}:3"]
    assert "listed twice" in found[f"{table}:5"]
    assert "a box needs all of" in found[f"{table}:6"]
    assert "whole pixels" in found[f"{table}:7"]
    assert "height/width > 0" in found[f"{table}:8"]
    assert "empty image" in found[f"{table}:9"]


def test_a_labels_csv_labels_the_folder_images_and_reports_strangers(tmp_path):
    touch(tmp_path / "images/a.png")
    touch(tmp_path / "images/b.png")
    touch(tmp_path / "images/c.png")
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "image,label,box_top,box_left,box_height,box_width\n"
        "images/a.png,dog,0,0,5,5\n"
        "images/zzz.png,dog,,,,\n"
        "images/b.png,1,,,,\n"
        "images/a.png,cat,,,,\n"
    )
    images, problems = list_images(tmp_path / "images", labels)
    assert [(image.key, image.label, image.box) for image in images] == [
        ("a.png", "dog", Box(0, 0, 5, 5)),
        ("b.png", "1", None),
        ("c.png", None, None),
    ]
    assert len(problems) == 2
    assert problems[0].where == f"{labels}:3" and "not among the audited images" in problems[0].message
    assert problems[1].where == f"{labels}:5" and "labelled twice" in problems[1].message
    assert images[0].origin == f"{labels}:2"


def test_labels_are_checked_against_the_model_by_name_or_index(tmp_path):
    for name in ("a.png", "b.png", "c.png", "d.png", "e.png"):
        touch(tmp_path / name)
    table = tmp_path / "list.csv"
    table.write_text("path,label\na.png,dog\nb.png,2\nc.png,3\nd.png,horse\ne.png,\n")
    images, _ = list_images(table)
    known, problems = check_labels(images, CLASSES)
    assert [(image.key, image.label) for image in known] == [("a.png", "dog"), ("b.png", "bird"), ("e.png", None)]
    assert [problem.where for problem in problems] == [f"{table}:4", f"{table}:5"]
    assert "unknown label '3'" in problems[0].message and "unknown label 'horse'" in problems[1].message


def test_a_csv_without_a_file_column_and_a_missing_source_are_errors(tmp_path):
    table = tmp_path / "list.csv"
    table.write_text("name,label\na.png,cat\n")
    with pytest.raises(ValueError, match="path or image column"):
        list_images(table)
    with pytest.raises(ValueError, match="no such folder or CSV"):
        list_images(tmp_path / "nowhere")
