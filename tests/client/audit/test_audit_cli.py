"""`onnxplain audit` end to end against a live server on a few hundred images: results, resume after SIGKILL,
a server that goes away mid-audit, and the report rebuilt from the output folder.

The predictions are checked against the ONNX model run here with onnxruntime and the model's preprocessing written
out by hand; mass_in_region against its definition (positive attribution inside the box over all of it) on the map
brought to the original size with torch's bilinear interpolation.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import onnxruntime
import pytest
import torch
from support.servers import free_port, run_cli, start_server
from support.waiting import wait_until

from onnxplain.client import Client, MethodSpec, Region
from onnxplain.server.demo import REPOSITORY

METHODS = ("grad_cam", "occlusion")
# The longest an audit of the test images, or one of its waits, may take on a busy machine: a ceiling, not a measure.
AUDIT_CEILING = 240.0
METHOD_PARAMS = {"occlusion": {"window": [7, 7], "stride": [7, 7]}}


def journal_lines(out: Path) -> list[dict]:
    text = (out / "results.jsonl").read_text() if (out / "results.jsonl").exists() else ""
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def independent_predictions(dataset) -> dict[str, int]:
    """The digits model run directly: gray, area-resized to 28x28, scaled to [0, 1], NCHW."""
    session = onnxruntime.InferenceSession(str(REPOSITORY / "digits/1/model.onnx"), providers=["CPUExecutionProvider"])
    predictions = {}
    for key in dataset.digits:
        picture = cv2.imread(str(dataset.images / key), cv2.IMREAD_GRAYSCALE)
        tensor = cv2.resize(picture, (28, 28), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        logits = session.run(None, {session.get_inputs()[0].name: tensor[None, None]})[0]
        predictions[key] = int(np.argmax(logits))
    return predictions


def expected_keys(dataset) -> set[str]:
    return (set(dataset.digits) - dataset.excluded) | dataset.broken


def test_every_image_is_audited_once_and_broken_ones_are_skipped_with_the_reason(finished_audit, dataset):
    lines = journal_lines(finished_audit)
    keys = [line["image"] for line in lines]
    assert len(keys) == len(set(keys)) and set(keys) == expected_keys(dataset)
    skipped = {line["image"]: line["reason"] for line in lines if line["status"] == "skipped"}
    assert set(skipped) == dataset.broken
    assert all(reason.startswith("predict: INVALID_ARGUMENT") for reason in skipped.values())
    assert "not a PNG, JPEG, BMP or WebP image" in skipped["broken.png"]
    assert len({line["id"] for line in lines}) == len(lines)  # twin stems in images/again/ do not collide
    leftovers = [path for path in finished_audit.rglob("*") if path.name.startswith(".tmp-")]
    assert leftovers == []


def test_predictions_labels_and_boxes_are_recorded_per_image(finished_audit, dataset):
    predictions = independent_predictions(dataset)
    for line in journal_lines(finished_audit):
        if line["status"] != "ok":
            continue
        key = line["image"]
        assert line["predicted"]["index"] == predictions[key], key
        assert line["label_index"] == dataset.labelled.get(key)
        expected_box = dataset.boxes.get(key) if key != "digit_4_strokes_001.png" else None  # its box line was bad
        assert line["box"] == (None if expected_box is None else list(expected_box))
        wrong = line["label_index"] is not None and line["label_index"] != line["predicted"]["index"]
        assert line["targets"] == [line["predicted"]["index"], *([line["label_index"]] if wrong else [])]


def test_maps_and_overlays_are_saved_for_the_predicted_and_the_true_class(finished_audit):
    for line in journal_lines(finished_audit):
        if line["status"] != "ok":
            continue
        for method in METHODS:
            files = line["methods"][method]
            assert np.load(finished_audit / files["map"]).shape == (len(line["targets"]), 28, 28)
            assert files["map"] == f"maps/{line['id']}.{method}.npy"
            overlays = [files["overlay"], files["true_overlay"]][: len(line["targets"])]
            assert files["true_overlay"] is None or len(line["targets"]) == 2
            for overlay in overlays:
                picture = cv2.imdecode(np.fromfile(finished_audit / overlay, np.uint8), cv2.IMREAD_COLOR)
                assert picture.shape == (112, 112, 3)


def test_saved_maps_and_metrics_match_direct_calls(finished_audit, dataset, audit_server):
    """The audit explains the right classes and scores the right maps against the right box."""
    lines = [line for line in journal_lines(finished_audit) if line["status"] == "ok"]
    wrong_with_box = next(line for line in lines if len(line["targets"]) == 2 and line["box"])
    plain = next(line for line in lines if line["box"] is None)
    with Client(audit_server.target, timeout=60) as client:
        for line in (wrong_with_box, plain):
            image = dataset.images / line["image"]
            box = line["box"]
            for method in METHODS:
                direct = client.explain(
                    "digits", image, method=method, target=line["targets"], **METHOD_PARAMS.get(method, {})
                )
                saved = np.load(finished_audit / line["methods"][method]["map"])
                np.testing.assert_allclose(saved, direct.attribution, rtol=1e-5, atol=1e-6)
                evaluation = client.evaluate(
                    "digits",
                    image,
                    methods=[MethodSpec(method=method, attributions=[saved[:1]])],
                    metrics=["deletion", "insertion", *(["pointing_game", "mass_in_region"] if box else [])],
                    target=line["targets"][:1],
                    regions=Region.from_box(*box) if box else None,
                )
                recorded = line["methods"][method]["metrics"]
                assert recorded == pytest.approx(evaluation.explainers[0].images[0][0].values)


def test_mass_in_the_box_follows_its_definition_and_corner_boxes_are_flagged(finished_audit, dataset):
    lines = {line["image"]: line for line in journal_lines(finished_audit) if line["status"] == "ok"}
    for key in sorted(dataset.corner_boxes - dataset.excluded)[:12]:
        line = lines[key]
        top, left, height, width = line["box"]
        for method in METHODS:
            predicted_map = torch.from_numpy(np.load(finished_audit / line["methods"][method]["map"])[:1][None])
            original = torch.nn.functional.interpolate(predicted_map, size=(112, 112), mode="bilinear")[0, 0].numpy()
            positive = np.clip(original.astype(np.float64), 0, None)
            expected = positive[top : top + height, left : left + width].sum() / positive.sum()
            assert line["methods"][method]["metrics"]["mass_in_region"] == pytest.approx(expected, abs=1e-4)
    # A box in an empty corner holds little of any map: those images must be among the outliers.
    report = (finished_audit / "report.html").read_text()
    outliers = re.search(r'id="gallery-outside-box">(.*?)</div>\n</section>', report, re.S).group(1)
    for key in dataset.corner_boxes - dataset.excluded:
        assert key in outliers


def test_the_summary_line_and_the_report_count_right(finished_audit, dataset):
    predictions = independent_predictions(dataset)
    labelled = {key: label for key, label in dataset.labelled.items() if key not in dataset.excluded}
    correct = sum(predictions[key] == label for key, label in labelled.items())
    report = (finished_audit / "report.html").read_text()
    assert f"<th>accuracy</th><td>{correct / len(labelled):.2%} ({correct} of {len(labelled)})</td>" in report
    assert "<th>version</th><td>1</td>" in report
    assert f"<th>images skipped</th><td>{len(dataset.broken)}</td>" in report
    assert f"<th>input problems</th><td>{len(dataset.problem_lines)}</td>" in report
    problems = json.loads((finished_audit / "run.json").read_text())["problems"]
    assert {problem["where"]: problem["message"] for problem in problems}.keys() == {
        f"{dataset.labels}:{line}" for line in dataset.problem_lines
    }
    for problem in problems:
        line = int(problem["where"].rsplit(":", 1)[1])
        assert dataset.problem_lines[line] in problem["message"]
    assert "data:image/png;base64," in report and 'src="overlays/' not in report
    assert not re.search(r"(src|href)=\"(https?:)?//", report)


def test_a_killed_audit_resumes_without_redoing_or_losing_work(dataset, audit_server, tmp_path):
    out = tmp_path / "audit"
    command = [sys.executable, "-m", "onnxplain.client.cli.main", *dataset.audit_command(audit_server.target, out)]
    command[command.index("--concurrency") + 1] = "2"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(journal_lines(out)) >= 60 or process.poll() is not None, AUDIT_CEILING, "60 lines")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the audit ended before it could be killed"
    before = journal_lines(out)
    total = len(expected_keys(dataset))
    assert 60 <= len(before) < total
    done_files = {
        path: ((out / path).stat().st_ino, (out / path).stat().st_mtime_ns)
        for line in before
        if line["status"] == "ok"
        for files in line["methods"].values()
        for path in (files["map"], files["overlay"], files["true_overlay"])
        if path
    }
    journal_text = (out / "results.jsonl").read_text()
    complete = journal_text[: journal_text.rfind("\n") + 1]
    # What a kill at the worst moment leaves: a torn journal line and a half-written temporary file.
    with (out / "results.jsonl").open("a") as file:
        file.write('{"image": "digit_3_clean_0')
    (out / "maps" / ".tmp-1-half.npy").write_bytes(b"\x93NUMPY")

    result = run_cli(*dataset.audit_command(audit_server.target, out))
    assert result.returncode == 0, result.stderr
    after = journal_lines(out)
    keys = [line["image"] for line in after]
    assert len(keys) == len(set(keys)) == total and set(keys) == expected_keys(dataset)
    assert (out / "results.jsonl").read_text().startswith(complete)  # earlier lines kept as they were
    for path, identity in done_files.items():
        stat = (out / path).stat()
        assert (stat.st_ino, stat.st_mtime_ns) == identity, f"{path} was rewritten"
    assert not list(out.rglob(".tmp-*"))
    assert f"{total - len(dataset.broken)} images audited, {len(dataset.broken)} skipped" in result.stdout


class AuditRun:
    """`onnxplain audit` in a child process, its output read as it comes: a pipe nobody reads fills up and stalls
    the audit, and the retry messages on stderr tell when the audit is waiting for the server."""

    def __init__(self, server: str, dataset, out: Path) -> None:
        command = [sys.executable, "-m", "onnxplain.client.cli.main", *dataset.audit_command(server, out)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in ((self.process.stdout, self._stdout), (self.process.stderr, self._stderr))
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    @property
    def stdout(self) -> str:
        return "".join(self._stdout)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def running(self) -> bool:
        return self.process.poll() is None

    def wait_for_lines(self, out: Path, count: int) -> None:
        wait_until(lambda: len(journal_lines(out)) >= count or not self.running(), AUDIT_CEILING, f"{count} lines")
        assert self.running(), f"the audit ended before {count} images were done:\n{self.stderr}"

    def wait_until_retrying(self) -> None:
        """Until a call has failed with UNAVAILABLE and the audit said it waits to retry it."""
        wait_until(lambda: "retrying in" in self.stderr or not self.running(), AUDIT_CEILING, "a retry")
        assert self.running(), f"the audit did not wait for the server:\n{self.stderr}"

    def finish(self) -> int:
        """The exit status; the audit's own work and waits are bounded by AUDIT_CEILING, so reaching it is a hang."""
        returncode = self.process.wait(AUDIT_CEILING)
        for reader in self._readers:
            reader.join(AUDIT_CEILING)
        return returncode

    def kill(self) -> None:
        if self.running():
            self.process.kill()
            self.process.wait()


def test_a_server_that_goes_away_mid_audit_is_waited_for_and_the_audit_completes(dataset, tmp_path):
    port = free_port()
    out = tmp_path / "audit"
    first = start_server(REPOSITORY, "--port", str(port))
    audit = AuditRun(first.target, dataset, out)
    second = None
    try:
        audit.wait_for_lines(out, 40)
        first.process.kill()  # a crash, not a graceful stop
        first.process.wait()
        audit.wait_until_retrying()
        lines_while_down = len(journal_lines(out))
        second = start_server(REPOSITORY, "--port", str(port))
        returncode = audit.finish()
    finally:
        audit.kill()
        if second is not None:
            second.stop()
    assert returncode == 0, audit.stderr
    assert lines_while_down < len(expected_keys(dataset))
    assert "UNAVAILABLE" in audit.stderr and "retrying in" in audit.stderr
    lines = journal_lines(out)
    keys = [line["image"] for line in lines]
    assert len(keys) == len(set(keys)) and set(keys) == expected_keys(dataset)
    # No image was given up on while the server was away: only the files that are not images were skipped.
    assert {line["image"] for line in lines if line["status"] == "skipped"} == dataset.broken
    assert "images audited" in audit.stdout


def test_ctrl_c_while_the_server_is_away_stops_at_once_and_keeps_every_finished_image(dataset, tmp_path):
    """Ctrl-C while the calls wait to be retried ends the audit with status 130. Without the stop, the retries would
    go on for --give-up-after (600 s by default), far past the ceiling the test waits for the exit."""
    server = start_server(REPOSITORY, "--port", str(free_port()))
    out = tmp_path / "audit"
    audit = AuditRun(server.target, dataset, out)
    try:
        audit.wait_for_lines(out, 30)
        server.process.kill()
        server.process.wait()
        audit.wait_until_retrying()
        audit.process.send_signal(signal.SIGINT)
        returncode = audit.finish()
    finally:
        audit.kill()
    assert returncode == 130, audit.stderr
    text = (out / "results.jsonl").read_text()
    assert text.endswith("\n")
    for line in journal_lines(out):
        for files in line.get("methods", {}).values():
            assert (out / files["map"]).is_file() and (out / files["overlay"]).is_file()


def test_the_report_is_rebuilt_from_the_output_folder_alone(audit_copy):
    original = (audit_copy / "report.html").read_bytes()
    (audit_copy / "report.html").unlink()
    result = run_cli("audit", "--model", "digits", "--report-only", "--out", str(audit_copy), "--server", "127.0.0.1:9")
    assert result.returncode == 0, result.stderr
    assert (audit_copy / "report.html").read_bytes() == original
    result = run_cli("audit", "--model", "digits", "--report-only", "--report-images", "link", "--out", str(audit_copy))
    assert result.returncode == 0, result.stderr
    linked = (audit_copy / "report.html").read_text()
    assert "data:image/png;base64,iVBOR" in linked  # the mean maps, made by the client, stay inline
    sources = re.findall(r'<img src="(overlays/[^"]+)"', linked)
    assert sources and all((audit_copy / source).is_file() for source in sources)
    assert len(linked) < len(original) / 5


def test_resuming_with_other_settings_is_refused(audit_copy, dataset, audit_server):
    command = dataset.audit_command(audit_server.target, audit_copy)
    command[command.index("--metrics") + 1] = "insertion"
    command[command.index("occlusion.stride=7,7")] = "occlusion.stride=4,4"
    result = run_cli(*command)
    assert result.returncode == 1
    assert "other settings (method_params, metrics differ)" in result.stderr
    assert len(journal_lines(audit_copy)) == len(expected_keys(dataset))


def test_unknown_methods_and_metrics_are_refused_before_any_work(dataset, audit_server, tmp_path):
    base = ["audit", "--server", audit_server.target, "--model", "digits", "--images", str(dataset.images)]
    result = run_cli(*base, "--methods", "grad_cam,bogus", "--out", str(tmp_path / "a"))
    assert result.returncode == 1 and "digits does not support bogus" in result.stderr
    result = run_cli(*base, "--methods", "grad_cam", "--metrics", "deletion,nope", "--out", str(tmp_path / "b"))
    assert result.returncode == 1 and "unknown metrics nope" in result.stderr
    assert not (tmp_path / "a" / "results.jsonl").exists() and not (tmp_path / "b" / "results.jsonl").exists()


def test_an_images_csv_audit_without_metrics(dataset, audit_server, tmp_path):
    table = dataset.root / "few.csv"
    table.write_text("path,label\nimages/digit_3_clean_000.png,three\nimages/digit_8_clean_005.png,eight\n")
    out = tmp_path / "audit"
    options = ["--model", "digits", "--methods", "saliency", "--metrics", "none", "--images", str(table)]
    result = run_cli("audit", "--server", audit_server.target, *options, "--out", str(out))
    assert result.returncode == 0, result.stderr
    lines = journal_lines(out)
    assert [line["image"] for line in lines] != [] and all(
        line["methods"]["saliency"]["metrics"] == {} for line in lines
    )
    assert sorted(line["image"] for line in lines) == ["images/digit_3_clean_000.png", "images/digit_8_clean_005.png"]
    report = (out / "report.html").read_text()
    assert "No metrics were computed" in report
    assert "Not measured" in report


def test_usage_errors(tmp_path):
    result = run_cli("audit", "--model", "digits", "--out", str(tmp_path))
    assert result.returncode == 2 and "--images and --methods are required" in result.stderr
    result = run_cli("audit", "--model", "digits", "--methods", "a", "--param", "window=3", "--out", str(tmp_path))
    assert result.returncode == 2 and "METHOD.KEY=VALUE" in result.stderr
    result = run_cli("audit", "--model", "digits", "--report-only", "--out", str(tmp_path / "none"))
    assert result.returncode == 1 and "holds no audit" in result.stderr
    assert os.listdir(tmp_path) == []
