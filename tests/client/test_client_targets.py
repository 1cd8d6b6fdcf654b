import numpy as np
import pytest

from onnxplain.client.errors import InvalidArgumentError
from onnxplain.client.targets import TopK, keeps_target_axis, to_targets


def kinds(target):
    return [(item.WhichOneof("kind"), getattr(item, item.WhichOneof("kind"))) for item in to_targets(target)]


def test_none_asks_for_the_top_prediction():
    assert to_targets(None) == []


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (281, [("class_index", 281)]),
        (np.int64(7), [("class_index", 7)]),
        ("tabby", [("label", "tabby")]),
        (TopK(3), [("top_k", 3)]),
        ([1, "dog", TopK(2)], [("class_index", 1), ("label", "dog"), ("top_k", 2)]),
        ((5,), [("class_index", 5)]),
    ],
)
def test_targets_convert_by_type(target, expected):
    assert kinds(target) == expected


@pytest.mark.parametrize("target", [True, 1.5, b"cat", [None]])
def test_other_target_types_are_rejected(target):
    with pytest.raises(InvalidArgumentError, match="cannot use a"):
        to_targets(target)


@pytest.mark.parametrize("k", [0, -1, True, 2.0])
def test_top_k_needs_a_positive_integer(k):
    with pytest.raises(ValueError):
        TopK(k)


@pytest.mark.parametrize(
    ("target", "keeps"),
    [(None, False), (3, False), ("cat", False), ([3], True), ((3, 4), True), (TopK(1), True)],
)
def test_only_lists_and_top_k_keep_the_target_axis(target, keeps):
    assert keeps_target_axis(target) is keeps
