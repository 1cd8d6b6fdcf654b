"""AsyncClient against the fake service (asyncio.run: no pytest-asyncio needed)."""

import asyncio

import grpc
import pytest

from onnxplain.client import AsyncClient, Explanation, OnnxplainError, PartialMap, Progress


def run(coroutine):
    return asyncio.run(coroutine)


def test_predict_and_explain(server_address):
    async def scenario():
        async with AsyncClient(server_address, timeout=10) as client:
            prediction = await client.predict("resnet", b"png")
            explanations = await client.explain("resnet", [b"a", b"b"], target=[0, 2], colormap="jet")
            return prediction, explanations

    prediction, explanations = run(scenario())
    assert prediction.class_index == 0
    assert len(explanations) == 2
    assert explanations[0].attribution.shape == (2, 4, 5)
    assert explanations[0].overlays == [b"png-0", b"png-2"]


def test_predict_and_explain_send_the_head_they_name(server_address, fake_service):
    async def scenario():
        async with AsyncClient(server_address, timeout=10) as client:
            await client.predict("resnet", b"png", output="boxes")
            await client.explain("resnet", b"png", output="boxes")
            return [event async for event in client.explain_stream("resnet", b"png", output="boxes")]

    run(scenario())
    predict, explain, stream = fake_service.requests
    assert [predict.output, explain.output, stream.output] == ["boxes"] * 3


def test_explain_stream(server_address):
    async def scenario():
        async with AsyncClient(server_address) as client:
            return [event async for event in client.explain_stream("resnet", b"png")]

    assert [type(event) for event in run(scenario())] == [Progress, PartialMap, Progress, Explanation]


def test_leaving_a_stream_early(server_address):
    async def scenario():
        async with AsyncClient(server_address) as client:
            stream = client.explain_stream("resnet", b"png")
            first = await stream.__anext__()
            await stream.aclose()
            return first

    assert isinstance(run(scenario()), Progress)


def test_catalog_and_lifecycle(server_address):
    async def scenario():
        async with AsyncClient(server_address) as client:
            return (
                await client.models(),
                await client.metadata("resnet"),
                await client.methods(),
                await client.load("resnet"),
                await client.unload("resnet"),
                await client.reload("resnet"),
            )

    models, metadata, methods, loaded, unloaded, reloaded = run(scenario())
    assert models[0].state == "ready"
    assert metadata.layout == "nchw"
    assert methods[0].family == "perturbation"
    assert loaded.state == reloaded.state == "ready"
    assert len(unloaded) == 2


def test_errors_map_to_onnxplain_error(server_address):
    async def scenario(call):
        async with AsyncClient(server_address) as client:
            if call == "stream":
                return [event async for event in client.explain_stream("missing", b"png")]
            return await client.predict("missing", b"png")

    for call in ("unary", "stream"):
        with pytest.raises(OnnxplainError) as caught:
            run(scenario(call))
        assert caught.value.code is grpc.StatusCode.NOT_FOUND
        assert caught.value.message == "model 'missing' not found"
