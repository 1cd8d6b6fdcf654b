"""The service as other tools see it: gRPC health, reflection, streaming, method listing, and the CLI."""

from __future__ import annotations

import asyncio
from pathlib import Path

import cv2
import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from support.servers import run_cli

from onnxplain.client import AsyncClient, Client, Explanation, Progress
from onnxplain.server.demo import SAMPLES

SERVICE = "onnxplain.v1.ExplainService"


def test_health_reports_serving_for_the_server_and_the_service(demo_server) -> None:
    with grpc.insecure_channel(demo_server.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE):
            response = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
            assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_services(demo_server) -> None:
    with grpc.insecure_channel(demo_server.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        response = next(stub.ServerReflectionInfo(iter([request]), timeout=10))
        names = {service.name for service in response.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health"} <= names


def test_methods_list_occlusion_with_its_parameters(demo_client: Client) -> None:
    methods = {method.name: method for method in demo_client.methods()}
    assert {p.name for p in methods["occlusion"].parameters} == {"window", "stride", "baseline"}


def test_metadata_describes_the_demo_model(demo_client: Client) -> None:
    metadata = demo_client.metadata("digits")
    assert metadata.num_classes == 10
    assert metadata.labels[6] == "six"
    assert metadata.providers == ["CPUExecutionProvider"]
    assert [tuple(i.shape) for i in metadata.inputs] == [(-1, 1, 28, 28)]
    assert any(m.name == "occlusion" and m.supported for m in metadata.methods)


def test_stream_sends_progress_then_the_same_result_as_unary(demo_client: Client) -> None:
    image = SAMPLES / "digit_6_strokes.png"
    events = list(demo_client.explain_stream("digits", image, method="occlusion", window=2, stride=1))
    progress = [e for e in events if isinstance(e, Progress)]
    final = events[-1]
    assert isinstance(final, Explanation)
    assert progress and progress[-1].passes_done == progress[-1].passes_total == 27 * 27
    unary = demo_client.explain("digits", image, method="occlusion", window=2, stride=1)
    np.testing.assert_allclose(final.attribution, unary.attribution, atol=1e-6)


def test_overlay_png_is_the_original_image_size(demo_client: Client) -> None:
    explanation = demo_client.explain("digits", SAMPLES / "digit_4_strokes.png", method="occlusion", overlay=True)
    overlay = cv2.imdecode(np.frombuffer(explanation.overlays[0], np.uint8), cv2.IMREAD_UNCHANGED)
    assert overlay.shape == (112, 112, 3)
    assert explanation.geometry.original_height == 112


def test_cli_explain_writes_map_and_overlay(demo_server, tmp_path: Path) -> None:
    result = run_cli(
        "explain",
        "--server",
        demo_server.target,
        "--model",
        "digits",
        "--method",
        "occlusion",
        str(SAMPLES / "digit_7_strokes.png"),
        "-o",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    attribution = np.load(tmp_path / "digit_7_strokes.occlusion.npy")
    assert attribution.shape == (28, 28)
    assert cv2.imread(str(tmp_path / "digit_7_strokes.occlusion.png")).shape == (112, 112, 3)


def test_cli_reports_server_errors_with_exit_code_1(demo_server) -> None:
    result = run_cli(
        "predict",
        "--server",
        demo_server.target,
        "--model",
        "nope",
        str(SAMPLES / "digit_3_clean.png"),
    )
    assert result.returncode == 1
    assert "NOT_FOUND" in result.stderr and "nope" in result.stderr


def test_async_client_predicts_and_explains(demo_server) -> None:
    async def run() -> tuple:
        async with AsyncClient(demo_server.target, timeout=60) as client:
            prediction = await client.predict("digits", SAMPLES / "digit_3_clean.png")
            explanation = await client.explain(
                "digits", SAMPLES / "digit_3_clean.png", method="occlusion", target="three"
            )
            return prediction, explanation

    prediction, explanation = asyncio.run(run())
    assert prediction.top[0].label == "three"
    assert explanation.targets == [3] and explanation.attribution.shape == (28, 28)


def test_cli_sends_segments_and_saves_the_segmentation(demo_server, tmp_path: Path) -> None:
    segments = np.zeros((28, 28), np.int64)
    segments[:, 14:] = 1
    segments[14:, :] += 2
    np.save(tmp_path / "quarters.npy", segments)
    result = run_cli(
        "explain",
        "--server",
        demo_server.target,
        "--model",
        "digits",
        "--method",
        "feature_ablation",
        "--segments",
        str(tmp_path / "quarters.npy"),
        "--no-overlay",
        str(SAMPLES / "digit_6_strokes.png"),
        "-o",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "digit_6_strokes.feature_ablation.segments.npy"), segments)
    attribution = np.load(tmp_path / "digit_6_strokes.feature_ablation.npy")
    for quarter in range(4):
        assert np.unique(attribution[segments == quarter]).size == 1, "one value per segment"


def test_segment_overlays_outline_the_segments(demo_client: Client) -> None:
    """Two segments, left and right halves at the model's 28x28: the overlay (112x112) has a white line between."""
    segments = np.zeros((28, 28), np.int32)
    segments[:, 14:] = 1
    explanation = demo_client.explain(
        "digits", SAMPLES / "digit_3_clean.png", method="feature_ablation", segments=segments, overlay=True
    )
    picture = cv2.imdecode(np.frombuffer(explanation.overlays[0], np.uint8), cv2.IMREAD_COLOR)
    white = (picture == 255).all(axis=2)
    columns = np.flatnonzero(white.all(axis=0))
    assert len(columns) > 0 and all(48 <= c <= 60 for c in columns), columns


def test_score_cam_streams_its_progress_over_the_layers_channels(demo_client: Client) -> None:
    # One masked forward per channel: without progress a stream (and `onnxplain check`) sees nothing until the end.
    image = SAMPLES / "digit_3_clean.png"
    events = list(demo_client.explain_stream("digits", image, method="score_cam"))
    progress = [e for e in events if isinstance(e, Progress)]
    assert isinstance(events[-1], Explanation)
    # After the pass that reads the layer, the masked passes count up to the channel count.
    assert progress and 1 < progress[-1].passes_done == progress[-1].passes_total
    unary = demo_client.explain("digits", image, method="score_cam")
    np.testing.assert_allclose(events[-1].attribution, unary.attribution, atol=1e-6)
