"""report.html: one page with the audit's tables and galleries, readable offline (see template.py)."""

from __future__ import annotations

from pathlib import Path

from onnxplain.client.audit import galleries
from onnxplain.client.audit.html import Pictures, facts, number, section, table, text
from onnxplain.client.audit.journal import write_atomically
from onnxplain.client.audit.notes import RunNotes
from onnxplain.client.audit.settings import AuditSettings
from onnxplain.client.audit.sources import Problem
from onnxplain.client.audit.summary import AuditSummary
from onnxplain.client.audit.template import PAGE

REPORT_NAME = "report.html"


def write_report(
    out_dir: Path, summary: AuditSummary, settings: AuditSettings, notes: RunNotes, inline: bool = True
) -> Path:
    path = out_dir / REPORT_NAME
    write_atomically(path, render_report(summary, settings, notes, Pictures(out_dir, inline)).encode())
    return path


def render_report(summary: AuditSummary, settings: AuditSettings, notes: RunNotes, pictures: Pictures) -> str:
    title = f"onnxplain audit of {settings.model}"
    sections = [
        ("overview", "Overview", _overview(summary, settings, notes.problems)),
        ("metrics", "Metrics of the methods", _metrics(summary, notes)),
        ("confusion", "Confusion matrix", _confusion(summary)),
        ("mean-maps", "Per-class mean maps", galleries.mean_maps(summary)),
        (
            "misclassified",
            "Misclassified: maps of the predicted and the true class",
            galleries.misclassified(summary, pictures),
        ),
        ("outside-box", "Maps mostly outside the given box", galleries.outside_box(summary, pictures)),
        ("all-images", "All images", galleries.all_images(summary, pictures)),
        ("skipped", "Skipped images", _skipped(summary)),
        ("problems", "Input problems", _problems(notes.problems)),
    ]
    nav = "<nav>" + "".join(f'<a href="#{anchor}">{text(name)}</a>' for anchor, name, _ in sections) + "</nav>"
    body = f"<h1>{text(title)}</h1>\n{nav}\n" + "\n".join(section(*parts) for parts in sections)
    return PAGE.replace("{{title}}", text(title)).replace("{{body}}", body)


def _overview(summary: AuditSummary, settings: AuditSettings, problems: list[Problem]) -> str:
    accuracy = summary.accuracy
    rows = [
        ("model", settings.model),
        ("version" + ("s" if len(summary.versions) > 1 else ""), ", ".join(summary.versions) or "n/a"),
        ("methods", ", ".join(settings.methods)),
        ("metrics", ", ".join(summary.metrics) or "none"),
        ("images audited", len(summary.audited)),
        ("images skipped", len(summary.skipped)),
        ("input problems", len(problems)),
        ("images with a label", summary.labelled),
        ("accuracy", "n/a" if accuracy is None else f"{accuracy:.2%} ({summary.correct} of {summary.labelled})"),
        ("misclassified", len(summary.misclassified)),
    ]
    return facts(rows, "overview-table")


def _metrics(summary: AuditSummary, notes: RunNotes) -> str:
    if not summary.metrics:
        return '<p class="note">No metrics were computed (--metrics none).</p>'
    rows = [
        [method, *(number(summary.metric_means[method][metric]) for metric in summary.metrics)]
        for method in summary.methods
    ]
    header = ["method"] + [_metric_heading(metric, notes) for metric in summary.metrics]
    explained = "".join(
        f"<li><b>{text(name)}</b>: {text(notes.metrics[name].description)}</li>"
        for name in summary.metrics
        if name in notes.metrics
    )
    note = (
        '<p class="note">Means over the images where a metric is defined, for the map of the predicted class; '
        "↑ higher is better, ↓ lower is better.</p>"
    )
    return note + table(header, rows, "metrics-table") + (f'<ul class="note">{explained}</ul>' if explained else "")


def _metric_heading(metric: str, notes: RunNotes) -> str:
    if metric not in notes.metrics:
        return metric
    return f"{metric} {'↑' if notes.metrics[metric].higher_is_better else '↓'}"


def _confusion(summary: AuditSummary) -> str:
    if not summary.labelled:
        return '<p class="note">No image has a label.</p>'
    head = "".join(f"<th>{text(label)}</th>" for _, label in summary.classes)
    rows = []
    for row, (_, label) in enumerate(summary.classes):
        cells = "".join(
            _confusion_cell(int(count), row == column) for column, count in enumerate(summary.confusion[row])
        )
        rows.append(f"<tr><th>{text(label)}</th>{cells}</tr>")
    return (
        '<p class="note">Rows: the true class; columns: the predicted class.</p>'
        f'<table id="confusion-table" class="confusion"><thead><tr><th>true \\ predicted</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _confusion_cell(count: int, diagonal: bool) -> str:
    css = "diagonal" if diagonal else ("off" if count else "")
    return f'<td class="number {css}">{count}</td>'


def _skipped(summary: AuditSummary) -> str:
    if not summary.skipped:
        return '<p class="note">None.</p>'
    rows = [(record["image"], record["reason"]) for record in summary.skipped]
    return table(("image", "reason"), rows, "skipped-table")


def _problems(problems: list[Problem]) -> str:
    if not problems:
        return '<p class="note">None.</p>'
    return table(("where", "problem"), [(problem.where, problem.message) for problem in problems], "problems-table")
