import numpy as np
import pytest

from onnxplain.client.errors import InvalidArgumentError
from onnxplain.client.parameters import from_parameter, from_parameters, to_parameter, to_parameters
from onnxplain.v1 import explain_service_pb2 as pb


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        (True, "flag", True),
        (np.bool_(False), "flag", False),
        (3, "integer", 3),
        (np.int64(-4), "integer", -4),
        (0.5, "number", 0.5),
        (np.float32(0.25), "number", 0.25),
        ("zeros", "text", "zeros"),
        ((4, 4), "numbers", [4.0, 4.0]),
        ([1, 2.5], "numbers", [1.0, 2.5]),
        (np.array([8, 8]), "numbers", [8.0, 8.0]),
        ([], "numbers", []),
    ],
)
def test_python_values_map_to_the_matching_parameter_kind(value, kind, expected):
    parameter = to_parameter("p", value)
    assert parameter.WhichOneof("value") == kind
    assert from_parameter(parameter) == expected


def test_bool_is_a_flag_not_an_integer():
    assert to_parameter("abs", True).WhichOneof("value") == "flag"


@pytest.mark.parametrize("value", [None, {"a": 1}, [1, "x"], [True, 1], np.zeros((2, 2)), object(), b"bytes"])
def test_other_types_are_rejected_with_the_parameter_name(value):
    with pytest.raises(InvalidArgumentError, match="'window'"):
        to_parameter("window", value)


def test_parameter_maps_round_trip_sorted_by_name():
    wire = to_parameters({"window": (4, 4), "abs": True, "baseline": "blur"})
    decoded = from_parameters(pb.ExplainRequest(parameters=wire).parameters)
    assert list(decoded) == ["abs", "baseline", "window"]
    assert decoded == {"abs": True, "baseline": "blur", "window": [4.0, 4.0]}


def test_an_unset_parameter_decodes_to_none():
    assert from_parameter(pb.Parameter()) is None
