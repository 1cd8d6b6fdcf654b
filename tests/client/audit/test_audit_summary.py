"""The summary of a journal, against references computed here (scikit-learn's confusion matrix, numpy means)."""

import math

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix

from onnxplain.client.audit.settings import AuditSettings
from onnxplain.client.audit.summary import summarize

NAMES = ["cat", "dog", "bird", "fish"]
MASS_IN_BOX = {1: 0.3, 2: 0.8, 5: 0.1, 6: math.nan}
SETTINGS = AuditSettings(model="m", version="", methods=("a", "b"), metrics=("insertion", "deletion"))


def record(tmp_path, key, label, predicted, maps, metrics=None, box=None, status="ok"):
    """A journal line as image_audit writes it, with its maps saved (predicted class first, then the true one)."""
    if status != "ok":
        return {"image": key, "id": key, "label": None, "box": None, "status": status, "reason": "broken"}
    targets = [predicted] if label is None or label == predicted else [predicted, label]
    files = {}
    for method in SETTINGS.methods:
        path = tmp_path / f"{key}.{method}.npy"
        np.save(path, maps[: len(targets)] * (2.0 if method == "b" else 1.0))
        files[method] = {"map": path.name, "overlay": "o.png", "true_overlay": None, "metrics": dict(metrics or {})}
    return {
        "image": key,
        "id": key,
        "label": None if label is None else NAMES[label],
        "label_index": label,
        "box": box,
        "status": "ok",
        "version": "1",
        "predicted": {"index": predicted, "label": NAMES[predicted], "probability": 0.5},
        "targets": targets,
        "size": [8, 8],
        "methods": files,
    }


@pytest.fixture
def journal(tmp_path):
    rng = np.random.default_rng(1)
    pairs = [(0, 0), (0, 1), (1, 1), (2, 0), (None, 3), (2, 2), (1, 1), (0, 0)]
    records = []
    for index, (label, predicted) in enumerate(pairs):
        maps = rng.normal(size=(2, 4, 4))
        metrics = {"deletion": index / 10, "insertion": math.nan if index == 3 else index / 5}
        if index in MASS_IN_BOX:
            metrics |= {"pointing_game": 1.0, "mass_in_region": MASS_IN_BOX[index]}
        records.append(record(tmp_path, f"img{index}", label, predicted, maps, metrics, box=[0, 0, 2, 2]))
    records.append(record(tmp_path, "broken", None, None, None, status="skipped"))
    return records


def test_accuracy_and_the_confusion_matrix_count_labelled_images(journal, tmp_path):
    summary = summarize(journal, SETTINGS, tmp_path)
    labelled = [line for line in journal if line.get("label_index") is not None]
    truth = [line["label_index"] for line in labelled]
    predicted = [line["predicted"]["index"] for line in labelled]
    assert summary.labelled == 7
    assert summary.accuracy == pytest.approx(np.mean(np.array(truth) == np.array(predicted)))
    indices = [index for index, _ in summary.classes]
    assert indices == [0, 1, 2]  # class 3 only appears as the prediction of an unlabelled image
    assert [name for _, name in summary.classes] == ["cat", "dog", "bird"]
    np.testing.assert_array_equal(summary.confusion, confusion_matrix(truth, predicted, labels=indices))
    assert [line["image"] for line in summary.misclassified] == ["img1", "img3"]
    assert [line["image"] for line in summary.skipped] == ["broken"]
    assert len(summary.audited) == 8
    assert summary.versions == ["1"]


def test_metric_means_leave_undefined_values_out_and_keep_the_requested_order(journal, tmp_path):
    summary = summarize(journal, SETTINGS, tmp_path)
    assert summary.metrics == ["insertion", "deletion", "pointing_game", "mass_in_region"]
    means = summary.metric_means["a"]
    assert means["deletion"] == pytest.approx(np.mean([index / 10 for index in range(8)]))
    assert means["insertion"] == pytest.approx(np.mean([index / 5 for index in range(8) if index != 3]))
    assert means["mass_in_region"] == pytest.approx(0.4)


def test_class_means_average_each_images_class_map_scaled_to_one(journal, tmp_path):
    summary = summarize(journal, SETTINGS, tmp_path)
    for method in SETTINGS.methods:
        expected = {}
        for line in journal[:-1]:
            index = line["label_index"] if line["label_index"] is not None else line["predicted"]["index"]
            maps = np.load(tmp_path / line["methods"][method]["map"])
            class_map = maps[line["targets"].index(index)]
            expected.setdefault(index, []).append(class_map / np.abs(class_map).max())
        means = summary.mean_maps[method]
        assert [mean.class_index for mean in means] == sorted(expected)
        for mean in means:
            assert mean.count == len(expected[mean.class_index])
            np.testing.assert_allclose(mean.map, np.mean(expected[mean.class_index], axis=0))


def test_images_with_little_of_the_map_in_their_box_are_listed_lowest_first(journal, tmp_path):
    summary = summarize(journal, SETTINGS, tmp_path)
    listed = [(outlier.record["image"], outlier.method, outlier.mass_in_box) for outlier in summary.outside_box]
    assert listed == [("img5", "a", 0.1), ("img5", "b", 0.1), ("img1", "a", 0.3), ("img1", "b", 0.3)]


def test_a_redone_image_counts_once_with_its_last_line(journal, tmp_path):
    redone = dict(journal[1], predicted={"index": 0, "label": "cat", "probability": 0.9})
    summary = summarize([*journal, redone], SETTINGS, tmp_path)
    assert len(summary.audited) == 8
    assert [line["image"] for line in summary.misclassified] == ["img3"]


def test_an_empty_journal_summarizes_to_nothing(tmp_path):
    summary = summarize([], SETTINGS, tmp_path)
    assert summary.accuracy is None and summary.metrics == [] and summary.confusion.shape == (0, 0)
