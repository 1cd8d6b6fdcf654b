"""Client against the fake service: real calls, so the thin wrapper's wiring is what is under test."""

import grpc
import numpy as np
import pytest

from onnxplain.client import Client, Explanation, OnnxplainError, PartialMap, Progress, TopK
from onnxplain.client.channel import MAX_MESSAGE_BYTES, channel_credentials, channel_options
from onnxplain.client.errors import InvalidArgumentError


@pytest.fixture
def client(server_address):
    with Client(server_address, timeout=10) as client:
        yield client


def test_predict_one_image_gives_one_prediction_and_a_list_gives_a_list(client):
    prediction = client.predict("resnet", b"png", top_k=2)
    assert prediction.label == "cat"
    assert len(prediction.top) == 2
    predictions = client.predict("resnet", [b"a", b"b"])
    assert isinstance(predictions, list) and len(predictions) == 2


def test_explain_sends_options_and_shapes_maps(client, fake_service):
    explanation = client.explain(
        "resnet", b"png", method="occlusion", target=TopK(2), overlay=True, window=(4, 4), abs=True
    )
    assert explanation.attribution.shape == (2, 4, 5)
    assert explanation.overlays == [b"png-0", b"png-1"]
    assert explanation.parameters == {"abs": True, "stride": 2, "window": [4.0, 4.0]}
    request = fake_service.requests[-1]
    assert request.render.overlay_png is True
    assert request.targets[0].top_k == 2


def test_predict_and_explain_send_the_head_they_name(client, fake_service):
    client.predict("resnet", b"png", output="boxes")
    client.explain("resnet", b"png", output="boxes")
    list(client.explain_stream("resnet", b"png", output="boxes"))
    client.explain("resnet", b"png")
    predict, explain, stream, default = fake_service.requests
    assert [predict.output, explain.output, stream.output, default.output] == ["boxes"] * 3 + [""]
    assert client.metadata("resnet").heads == ["scores", "boxes"]


def test_explain_a_label_target_gives_one_map(client):
    assert client.explain("resnet", b"png", target="dog").attribution.shape == (4, 5)


def test_explain_a_tensor_image_has_no_geometry(client):
    assert client.explain("resnet", np.zeros((3, 4, 5), dtype=np.float32)).geometry is None


def test_explain_stream_yields_progress_partials_then_the_result(client):
    events = list(client.explain_stream("resnet", b"png", target=1))
    assert [type(event) for event in events] == [Progress, PartialMap, Progress, Explanation]
    assert events[-1].attribution.shape == (4, 5)


def test_leaving_a_stream_early_cancels_it(client):
    stream = client.explain_stream("resnet", b"png")
    assert isinstance(next(stream), Progress)
    stream.close()


def test_catalog_and_lifecycle_calls(client):
    statuses = [(status.name, status.state) for status in client.models()]
    assert statuses == [("resnet", "ready"), ("broken", "unavailable")]
    assert client.models()[1].reason == "bad graph"
    assert client.metadata("resnet").labels == ["cat", "dog", "bird"]
    assert client.methods()[0].parameters[0].name == "window"
    assert client.load("resnet", "3").version == "3"
    assert [status.state for status in client.unload("resnet")] == ["unloaded", "unloaded"]
    assert client.reload("resnet").state == "ready"


def test_server_errors_raise_onnxplain_error(client):
    with pytest.raises(OnnxplainError) as caught:
        client.metadata("missing")
    assert caught.value.code is grpc.StatusCode.NOT_FOUND
    assert str(caught.value) == "NOT_FOUND: model 'missing' not found"


def test_stream_errors_raise_onnxplain_error(client):
    with pytest.raises(OnnxplainError, match="NOT_FOUND"):
        list(client.explain_stream("missing", b"png"))


def test_an_unreachable_server_is_unavailable():
    with Client("127.0.0.1:1", timeout=60) as client, pytest.raises(OnnxplainError) as caught:
        client.models()
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE


def test_bad_arguments_fail_before_any_call(client, fake_service):
    with pytest.raises(InvalidArgumentError, match="bool"):
        client.explain("resnet", np.zeros((4, 4, 3), dtype=bool))
    with pytest.raises(InvalidArgumentError, match="'window'"):
        client.explain("resnet", b"png", window={"h": 4})
    assert fake_service.requests == []


def test_channel_raises_message_limits_and_keeps_caller_options():
    options = dict(channel_options({"grpc.max_receive_message_length": 1, "grpc.primary_user_agent": "me"}))
    assert options["grpc.max_receive_message_length"] == 1
    assert options["grpc.max_send_message_length"] == MAX_MESSAGE_BYTES
    assert options["grpc.primary_user_agent"] == "me"
    assert dict(channel_options())["grpc.max_receive_message_length"] == MAX_MESSAGE_BYTES


def test_tls_only_with_certificates():
    assert channel_credentials() is None
    assert isinstance(channel_credentials(root_certificates=b"pem"), grpc.ChannelCredentials)
