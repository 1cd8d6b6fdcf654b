import grpc
import pytest

from onnxplain.client.errors import OnnxplainError, from_rpc_error, translating_rpc_errors


class FakeRpcError(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.NOT_FOUND

    def details(self):
        return "model 'x' not found"


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
