"""Names and values a request echoes in its error message (method, parameter, label, text value) are cut to a bounded
length: a 1 MiB name gets INVALID_ARGUMENT with a short message that still shows where the name starts."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from support.servers import RunningServer

from onnxplain.server.demo import SAMPLES
from onnxplain.v1 import explain_service_pb2 as pb
from onnxplain.v1.explain_service_pb2_grpc import ExplainServiceStub

LONG = "n" * 2**20
IMAGE = pb.Image(encoded=(SAMPLES / "digit_3_clean.png").read_bytes())


@pytest.fixture(scope="module")
def stub(demo_server: RunningServer) -> Iterator[ExplainServiceStub]:
    with grpc.insecure_channel(demo_server.target) as channel:
        yield ExplainServiceStub(channel)


def explain(method: str = "saliency", **fields: object) -> pb.ExplainRequest:
    return pb.ExplainRequest(model_name="digits", images=[IMAGE], method=method, **fields)


@pytest.mark.parametrize(
    ("request_", "fragment"),
    [
        (explain(LONG), "unknown method 'nnnn"),
        (explain(parameters={LONG: pb.Parameter(integer=1)}), "unknown parameter(s) nnnn"),
        (explain(parameters={f"{LONG[:1000]}{i}": pb.Parameter(flag=True) for i in range(1000)}), "parameter(s) nnn"),
        (explain("lrp", parameters={"composite": pb.Parameter(text=LONG)}), "got 'nnnn"),
        (explain("occlusion", parameters={"baseline": pb.Parameter(text=LONG)}), "got 'nnnn"),
        (explain(targets=[pb.Target(label=LONG)]), "unknown target label 'nnnn"),
    ],
    ids=["method", "parameter", "many-parameters", "choice", "number-or-choice", "label"],
)
def test_a_long_name_in_a_request_gets_a_short_message(
    stub: ExplainServiceStub, request_: pb.ExplainRequest, fragment: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Explain(request_, timeout=60)
    details = caught.value.details()
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, details[:2000]
    assert fragment in details
    assert len(details.encode()) < 1024
