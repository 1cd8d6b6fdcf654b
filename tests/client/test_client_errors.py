import asyncio
import pickle

import grpc
import numpy as np
import pytest
from support.servers import free_port, start_server

from onnxplain.client import (
    AsyncClient,
    Client,
    InvalidArgumentError,
    MethodSpec,
    OnnxplainError,
    Region,
    ServerUnreachableError,
    TopK,
)
from onnxplain.client.errors import from_rpc_error, translating_rpc_errors


class FakeRpcError(grpc.RpcError):
    def __init__(self, code=grpc.StatusCode.NOT_FOUND, details="model 'x' not found", trailing=()):
        self._code, self._details, self._trailing = code, details, trailing

    def code(self):
        return self._code

    def details(self):
        return self._details

    def trailing_metadata(self):
        return self._trailing


def test_rpc_errors_become_onnxplain_errors_with_code_and_message():
    with pytest.raises(OnnxplainError) as caught, translating_rpc_errors():
        raise FakeRpcError()
    assert caught.value.code is grpc.StatusCode.NOT_FOUND
    assert caught.value.message == "model 'x' not found"
    assert str(caught.value) == "NOT_FOUND: model 'x' not found"
    assert isinstance(caught.value.__cause__, FakeRpcError)


def test_a_bare_rpc_error_is_unknown():
    error = from_rpc_error(grpc.RpcError("boom"))
    assert error.code is grpc.StatusCode.UNKNOWN
    assert error.message == "boom"


def test_other_exceptions_pass_through():
    with pytest.raises(KeyError), translating_rpc_errors():
        raise KeyError("x")


def test_invalid_argument_errors_are_onnxplain_errors_and_value_errors():
    error = InvalidArgumentError("polarity must be one of ...")
    assert isinstance(error, OnnxplainError)
    assert isinstance(error, ValueError)
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert str(error) == "INVALID_ARGUMENT: polarity must be one of ..."
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.code, copy.message) == (InvalidArgumentError, error.code, error.message)


def test_the_servers_invalid_argument_is_an_invalid_argument_error_too():
    error = from_rpc_error(FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "image 0: not a PNG"))
    assert isinstance(error, InvalidArgumentError)
    assert error.message == "image 0: not a PNG"


def test_an_unavailable_no_server_sent_names_the_address_it_dialled():
    refused = FakeRpcError(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")
    error = from_rpc_error(refused, "db7:50051")
    assert isinstance(error, ServerUnreachableError)
    assert error.code is grpc.StatusCode.UNAVAILABLE
    assert error.target == "db7:50051"
    assert error.message == "no server answered at db7:50051 (failed to connect to all addresses)"
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.target, copy.message) == (ServerUnreachableError, error.target, error.message)


def test_an_unavailable_a_server_sent_keeps_its_message():
    # Every onnxplain answer carries x-request-id in its trailing metadata, a model that is still loading included.
    loading = FakeRpcError(grpc.StatusCode.UNAVAILABLE, "model 'x' is loading", trailing=(("x-request-id", "a1"),))
    for error in (from_rpc_error(loading, "db7:50051"), from_rpc_error(FakeRpcError(grpc.StatusCode.UNAVAILABLE))):
        assert type(error) is OnnxplainError
        assert error.code is grpc.StatusCode.UNAVAILABLE
    assert from_rpc_error(loading, "db7:50051").message == "model 'x' is loading"


def test_an_unreachable_server_is_named_by_both_clients():
    target = f"127.0.0.1:{free_port()}"

    async def list_models():
        async with AsyncClient(target, timeout=60, retries=False) as client:
            await client.models()

    with Client(target, timeout=60, retries=False) as client, pytest.raises(ServerUnreachableError) as caught:
        client.models()
    assert caught.value.message.startswith(f"no server answered at {target} (")
    with pytest.raises(ServerUnreachableError) as caught:
        asyncio.run(list_models())
    assert caught.value.target == target


def test_a_model_the_server_cannot_serve_is_unavailable_but_the_server_answered(tmp_path):
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "1" / "model.onnx").write_bytes(b"not an ONNX model")
    server = start_server(tmp_path)
    try:
        with Client(server.target, timeout=60, retries=False) as client, pytest.raises(OnnxplainError) as caught:
            client.predict("broken", b"png")
    finally:
        assert server.stop() == 0
    assert type(caught.value) is OnnxplainError
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert caught.value.message.startswith("model 'broken' version 1 is unavailable: ")


def _explain(**arguments):
    return lambda client, tmp_path: client.explain("resnet", b"png", **arguments)


def _evaluate(**arguments):
    return lambda client, tmp_path: client.evaluate("resnet", b"png", **arguments)


CLIENT_SIDE_MISTAKES = {
    "polarity": (_explain(polarity="sideways"), "polarity must be one of"),
    "attribution shape": (_explain(attribution_shape="voxels"), "attribution_shape must be one of"),
    "score space": (_explain(score_space="logits"), "score_space must be one of"),
    "missing file": (
        lambda client, tmp_path: client.predict("resnet", tmp_path / "gone.png"),
        "gone.png: cannot read the image file: No such file or directory",
    ),
    "empty file": (lambda client, tmp_path: client.predict("resnet", b""), "image bytes: empty image"),
    "image of no known kind": (lambda client, tmp_path: client.predict("resnet", {}), "cannot send a dict"),
    "array dtype": (lambda client, tmp_path: client.predict("resnet", np.zeros(3, complex)), "complex128"),
    "no images": (lambda client, tmp_path: client.predict("resnet", []), "no images given"),
    "target type": (_explain(target=1.5), "cannot use a float as a target"),
    "top-k": (lambda client, tmp_path: client.explain("resnet", b"png", target=TopK(0)), "TopK needs a positive"),
    "parameter type": (_explain(window={"h": 4}), "parameter 'window'"),
    "segments": (_explain(segments=np.zeros((2, 2), np.float32)), "must be integers"),
    "no explainers": (_evaluate(methods=[]), "no explainers given"),
    "empty method spec": (_evaluate(methods=[MethodSpec()]), "a MethodSpec needs a method or attributions"),
    "empty region": (_evaluate(regions=Region()), "a Region needs a box or a mask"),
    "region mask dtype": (_evaluate(regions=Region.from_mask(np.zeros((2, 2), complex))), "complex128"),
    "balancing policy": (
        lambda client, tmp_path: Client(client.target, load_balancing="random"),
        "load_balancing must be one of",
    ),
    "token": (lambda client, tmp_path: Client(client.target, token="two words"), "a token must be"),
}


@pytest.mark.parametrize("mistake", CLIENT_SIDE_MISTAKES)
def test_client_side_mistakes_are_invalid_argument_errors_raised_before_any_call(
    mistake, server_address, fake_service, tmp_path
):
    make_mistake, message = CLIENT_SIDE_MISTAKES[mistake]
    with Client(server_address, timeout=60) as client, pytest.raises(InvalidArgumentError) as caught:
        make_mistake(client, tmp_path)
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert message in caught.value.message
    assert fake_service.requests == []


def test_the_async_client_checks_arguments_the_same_way(server_address, fake_service, tmp_path):
    async def explain_missing_file():
        async with AsyncClient(server_address, timeout=60) as client:
            await client.explain("resnet", tmp_path / "gone.png", polarity="both")

    with pytest.raises(InvalidArgumentError, match=r"gone\.png: cannot read the image file"):
        asyncio.run(explain_missing_file())
    assert fake_service.requests == []
