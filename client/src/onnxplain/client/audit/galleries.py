"""The report's picture sections: per-class mean maps, misclassified images, maps outside their box, every image."""

from __future__ import annotations

from typing import Any

from onnxplain.client.audit.html import Pictures, card, data_uri, gallery, number, picture, text
from onnxplain.client.audit.png import map_to_png
from onnxplain.client.audit.summary import AuditSummary, Outlier, class_of


def mean_maps(summary: AuditSummary) -> str:
    by_class = sorted(
        ((mean, method) for method, means in summary.mean_maps.items() for mean in means),
        key=lambda pair: (pair[0].class_index, summary.methods.index(pair[1])),
    )
    cards = [
        card(
            picture(data_uri(map_to_png(mean.map)), method, f"mean {method} map of {mean.label}"),
            f"{text(mean.label)} ({mean.class_index}): {mean.count} images",
            {"class": str(mean.class_index), "method": method, "images": str(mean.count)},
        )
        for mean, method in by_class
    ]
    options = [("class", "class"), ("method", "method"), ("images", "images")]
    note = (
        '<p class="note">Each image\'s map of its class (its label, else the prediction), scaled to a largest '
        "|value| of 1, averaged over the class.</p>"
    )
    return note + gallery("gallery-mean-maps", cards, options)


def misclassified(summary: AuditSummary, pictures: Pictures) -> str:
    cards = []
    for record in summary.misclassified:
        predicted = record["predicted"]
        shown = "".join(
            picture(pictures.file(files["overlay"]), f"{method}: predicted", f"{method} map of {predicted['label']}")
            + picture(pictures.file(files["true_overlay"]), f"{method}: true", f"{method} map of {record['label']}")
            for method, files in record["methods"].items()
        )
        caption = (
            f"{text(record['image'])}<br>true <b>{text(record['label'])}</b>, predicted "
            f"<b>{text(predicted['label'])}</b> ({number(predicted['probability'], 3)[0]})"
        )
        sort_values = {"image": record["image"], "probability": number(predicted["probability"])[1]}
        cards.append(card(shown, caption, sort_values | {"true": record["label"], "predicted": predicted["label"]}))
    options = [("image", "image"), ("probability", "probability"), ("true", "true class"), ("predicted", "predicted")]
    return gallery("gallery-misclassified", cards, options)


def outside_box(summary: AuditSummary, pictures: Pictures) -> str:
    if not summary.metrics or not any(record["box"] for record in summary.audited):
        return '<p class="note">Not measured: give boxes in the CSV and keep metrics on (mass_in_region).</p>'
    cards = [_outlier_card(outlier, pictures) for outlier in summary.outside_box]
    options = [("mass", "mass in box"), ("image", "image"), ("method", "method")]
    return gallery("gallery-outside-box", cards, options)


def all_images(summary: AuditSummary, pictures: Pictures) -> str:
    cards = []
    for record in summary.audited:
        predicted = record["predicted"]
        box = _box_style(record)
        shown = "".join(
            picture(pictures.file(files["overlay"]), method, f"{method} map of {predicted['label']}", box)
            for method, files in record["methods"].items()
        )
        sort_values = {"image": record["image"], "probability": number(predicted["probability"])[1]}
        sort_values["class"] = str(class_of(record)[0])
        for method, files in record["methods"].items():
            sort_values.update({f"{method}-{metric}": number(value)[1] for metric, value in files["metrics"].items()})
        caption = f"{text(record['image'])}<br>predicted <b>{text(predicted['label'])}</b> " + (
            f"({number(predicted['probability'], 3)[0]})"
            + ("" if record["label"] is None else f", true {text(record['label'])}")
        )
        cards.append(card(shown, caption, sort_values))
    options = [("image", "image"), ("probability", "probability"), ("class", "class")]
    options += [
        (f"{method}-{metric}", f"{method} {metric}") for method in summary.methods for metric in summary.metrics
    ]
    return gallery("gallery-all", cards, options)


def _outlier_card(outlier: Outlier, pictures: Pictures) -> str:
    record, method = outlier.record, outlier.method
    files = record["methods"][method]
    shown = picture(pictures.file(files["overlay"]), method, f"{method} map", _box_style(record))
    caption = f"{text(record['image'])}<br>{text(method)}: {number(outlier.mass_in_box, 3)[0]} of the map in the box"
    return card(shown, caption, {"mass": repr(outlier.mass_in_box), "image": record["image"], "method": method})


def _box_style(record: dict[str, Any]) -> str:
    """The box as percentages of the original image, which the overlay shows whole."""
    if record["box"] is None or record["size"] is None:
        return ""
    top, left, height, width = record["box"]
    image_height, image_width = record["size"]

    def percent(value: float, total: int) -> str:
        return f"{100 * min(max(value, 0), total) / total:.2f}%"

    return (
        f"top:{percent(top, image_height)};left:{percent(left, image_width)};"
        f"height:{percent(min(height, image_height - top), image_height)};"
        f"width:{percent(min(width, image_width - left), image_width)}"
    )
