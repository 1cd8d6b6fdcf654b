"""The audit report in a real browser (Debian's Chromium, headless): no errors, no network, every picture shown,
sortable tables and galleries. A screenshot is kept in the test artifacts folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

from support.browser import artifacts_dir, open_page
from support.servers import run_cli

COUNT_PICTURES = """() => Object.fromEntries(Array.from(document.querySelectorAll(".gallery")).map((gallery) => {
    const pictures = Array.from(gallery.querySelectorAll("img"));
    return [gallery.id, [pictures.length, pictures.filter((img) => img.complete && img.naturalWidth > 0).length]];
}))"""
COLUMN_TEXT = """([table, column]) => Array.from(document.querySelectorAll(`#${table} tbody tr`))
    .map((row) => row.cells[column].textContent.trim())"""
CARD_KEYS = """([gallery, key]) => Array.from(document.getElementById(gallery).children)
    .map((card) => card.getAttribute("data-sort-" + key))"""


def expected_picture_counts(out: Path) -> dict[str, int]:
    """How many pictures each gallery must show, counted from the journal."""
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    audited = [line for line in lines if line["status"] == "ok"]
    methods = list(audited[0]["methods"])
    wrong = [line for line in audited if len(line["targets"]) == 2]
    outliers = [
        (line["image"], method)
        for line in audited
        for method in methods
        if (mass := line["methods"][method]["metrics"].get("mass_in_region")) is not None and mass < 0.5
    ]
    classes = {
        line["label_index"] if line["label_index"] is not None else line["predicted"]["index"] for line in audited
    }
    return {
        "gallery-mean-maps": len(classes) * len(methods),
        "gallery-misclassified": 2 * len(wrong) * len(methods),
        "gallery-outside-box": len(outliers),
        "gallery-all": len(audited) * len(methods),
    }


def test_the_report_renders_offline_with_every_picture_and_sorts(finished_audit):
    expected = expected_picture_counts(finished_audit)
    assert all(count > 0 for count in expected.values())
    with open_page(finished_audit / "report.html") as (page, log):
        counts = page.evaluate(COUNT_PICTURES)
        assert counts == {gallery: [count, count] for gallery, count in expected.items()}

        # Sortable table: a click on a header orders the rows by that column, a second click reverses them.
        before = page.evaluate(COLUMN_TEXT, ["metrics-table", 2])
        page.click("#metrics-table th:nth-child(3)")
        ascending = page.evaluate(COLUMN_TEXT, ["metrics-table", 2])
        assert [float(value) for value in ascending] == sorted(float(value) for value in before)
        page.click("#metrics-table th:nth-child(3)")
        assert page.evaluate(COLUMN_TEXT, ["metrics-table", 2]) == ascending[::-1]
        assert ascending[0] != ascending[-1]  # so the second click visibly changed the order

        # Sortable gallery: ordering the cards of every image by confidence.
        page.select_option('select[data-gallery="gallery-all"]', "probability:asc")
        probabilities = [float(value) for value in page.evaluate(CARD_KEYS, ["gallery-all", "probability"])]
        assert probabilities == sorted(probabilities) and probabilities[0] < probabilities[-1]
        page.select_option('select[data-gallery="gallery-all"]', "grad_cam-deletion:desc")
        deletions = [float(value) for value in page.evaluate(CARD_KEYS, ["gallery-all", "grad_cam-deletion"])]
        assert deletions == sorted(deletions, reverse=True) and not any(math.isnan(value) for value in deletions)

        page.select_option('select[data-gallery="gallery-all"]', "image:asc")
        page.screenshot(path=str(artifacts_dir() / "audit-report.png"), full_page=False)
        page.locator("#misclassified").scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts_dir() / "audit-report-misclassified.png"), full_page=False)
        skipped = page.evaluate("() => document.querySelectorAll('#skipped-table tbody tr').length")
        problems = page.evaluate("() => document.querySelectorAll('#problems-table tbody tr').length")
    assert log.console_errors == [] and log.page_errors == []
    assert [url for url in log.requests if not url.startswith(("file:", "data:"))] == []
    assert skipped == 2 and problems == 4
    assert (artifacts_dir() / "audit-report.png").stat().st_size > 10_000


def test_a_report_with_linked_pictures_shows_them_from_beside_it(audit_copy):
    result = run_cli("audit", "--model", "digits", "--report-only", "--report-images", "link", "--out", str(audit_copy))
    assert result.returncode == 0, result.stderr
    expected = expected_picture_counts(audit_copy)
    with open_page(audit_copy / "report.html") as (page, log):
        counts = page.evaluate(COUNT_PICTURES)
    assert counts == {gallery: [count, count] for gallery, count in expected.items()}
    assert log.console_errors == [] and log.page_errors == []
    assert any(url.startswith("file:") and "/overlays/" in url for url in log.requests)
