import numpy as np
import pytest

from onnxplain.client.catalog import ModelMetadata
from onnxplain.client.responses import (
    enum_name,
    parse_explain_response,
    parse_metadata,
    parse_method_info,
    parse_model_status,
    parse_predict_response,
    parse_stream_event,
    stack_maps,
)
from onnxplain.client.results import Explanation, PartialMap, Progress
from onnxplain.client.tensors import encode_tensor
from onnxplain.v1 import explain_service_pb2 as pb
from onnxplain.v1 import model_pb2

LABELS = ["cat", "dog", "bird"]
MAP_SHAPE = (4, 5)


def target_attribution(class_index, overlay=False):
    """A map filled with its class index, so a test can tell which target ended up where."""
    return pb.TargetAttribution(
        class_index=class_index,
        label=LABELS[class_index],
        score=float(3 - class_index),
        attribution=encode_tensor(np.full(MAP_SHAPE, class_index, dtype=np.float32)),
        overlay_png=f"png-{class_index}".encode() if overlay else b"",
    )


def explain_response(targets=(0,), images=1, overlay=False, geometry=True):
    explanation = pb.ImageExplanation(
        attributions=[target_attribution(index, overlay) for index in targets],
        scores=encode_tensor(np.array([3.0, 2.0, 1.0], dtype=np.float32)),
        geometry=pb.Geometry(original_height=8, original_width=10) if geometry else None,
    )
    return pb.ExplainResponse(
        model_name="m",
        model_version="1",
        method="occlusion",
        explanations=[explanation] * images,
        cost=pb.Cost(forward_passes=10, batch_size=8, runs=2, elapsed_seconds=0.25),
        parameters={"stride": pb.Parameter(integer=2)},
        providers=["CPUExecutionProvider"],
    )


def test_one_scalar_target_gives_a_map_without_target_axis():
    explanation = parse_explain_response(explain_response([2]), single=True, keep_target_axis=False)
    assert isinstance(explanation, Explanation)
    assert explanation.attribution.shape == MAP_SHAPE
    assert explanation.targets == [2]
    assert explanation.labels == ["bird"]


def test_several_targets_stack_along_a_leading_axis():
    explanation = parse_explain_response(explain_response([2, 1]), single=True, keep_target_axis=True)
    assert explanation.attribution.shape == (2, *MAP_SHAPE)
    assert explanation.targets == [2, 1]
    # Each slice is the map of its target (the fake fills maps with their class index).
    assert (explanation.attribution[0] == 2).all() and (explanation.attribution[1] == 1).all()


def test_a_list_of_one_target_keeps_the_axis():
    explanation = parse_explain_response(explain_response([0]), single=True, keep_target_axis=True)
    assert explanation.attribution.shape == (1, *MAP_SHAPE)


def test_stack_maps_handles_no_maps():
    assert stack_maps([], keep_target_axis=False).shape == (0,)
    assert stack_maps([np.zeros((2, 2))] * 3, keep_target_axis=False).shape == (3, 2, 2)


def test_request_wide_fields_are_copied_into_every_image():
    explanations = parse_explain_response(explain_response(images=2), single=False, keep_target_axis=False)
    assert isinstance(explanations, list) and len(explanations) == 2
    for explanation in explanations:
        assert (explanation.method, explanation.model, explanation.version) == ("occlusion", "m", "1")
        assert explanation.cost.forward_passes == 10
        assert explanation.cost.elapsed_seconds == 0.25
        assert explanation.parameters == {"stride": 2}
        assert explanation.providers == ["CPUExecutionProvider"]
        assert explanation.geometry.original_width == 10
        np.testing.assert_array_equal(explanation.scores, [3.0, 2.0, 1.0])
        assert explanation.target_scores == [3.0]


def test_overlays_are_listed_only_when_rendered():
    plain = parse_explain_response(explain_response(), single=True, keep_target_axis=False)
    assert plain.overlays == []
    rendered = parse_explain_response(explain_response([0, 1], overlay=True), single=True, keep_target_axis=True)
    assert rendered.overlays == [b"png-0", b"png-1"]


def test_tensor_images_have_no_geometry():
    explanation = parse_explain_response(explain_response(geometry=False), single=True, keep_target_axis=False)
    assert explanation.geometry is None


def test_a_single_image_expects_exactly_one_result():
    with pytest.raises(ValueError, match="2 results"):
        parse_explain_response(explain_response(images=2), single=True, keep_target_axis=False)


def test_predictions_expose_the_top_class():
    top = [pb.ClassScore(class_index=1, label="dog", score=4.0, probability=0.75)]
    response = pb.PredictResponse(predictions=[pb.Prediction(scores=encode_tensor(np.ones(3, "f4")), top=top)])
    prediction = parse_predict_response(response, single=True)
    assert (prediction.label, prediction.class_index, prediction.probability) == ("dog", 1, 0.75)
    assert prediction.scores.shape == (3,)
    assert "dog" in repr(prediction)
    assert parse_predict_response(response, single=False)[0].top[0].score == 4.0


def test_stream_events_parse_by_kind():
    def parse(message):
        return parse_stream_event(message, single=True, keep_target_axis=False)

    progress = parse(pb.ExplainStreamResponse(progress=pb.Progress(passes_done=1, passes_total=4)))
    assert progress == Progress(1, 4, 0.0)
    assert progress.fraction == 0.25
    attribution = pb.TargetAttribution(class_index=2, attribution=encode_tensor(np.ones((2, 2), "f4")))
    partial = parse(pb.ExplainStreamResponse(partial=pb.PartialAttribution(image_index=1, attribution=attribution)))
    assert isinstance(partial, PartialMap)
    assert (partial.image_index, partial.class_index, partial.attribution.shape) == (1, 2, (2, 2))
    assert partial.progress is None
    assert isinstance(parse(pb.ExplainStreamResponse(result=explain_response())), Explanation)
    assert parse(pb.ExplainStreamResponse()) is None


def test_metadata_becomes_a_typed_dataclass_with_plain_values():
    message = model_pb2.ModelMetadata(
        name="resnet",
        version="2",
        available_versions=["1", "2"],
        state=model_pb2.MODEL_STATE_READY,
        inputs=[model_pb2.TensorInfo(name="x", dtype="float32", shape=[-1, 3, 224, 224], dim_names=["N", "", "", ""])],
        layout=model_pb2.LAYOUT_NCHW,
        labels=LABELS,
        output_kind=model_pb2.OUTPUT_KIND_LOGITS,
        methods=[
            model_pb2.MethodSupport(
                name="saliency", family=model_pb2.METHOD_FAMILY_GRADIENT, supported=False, reason="TopK has no gradient"
            ),
            model_pb2.MethodSupport(name="occlusion", family=model_pb2.METHOD_FAMILY_PERTURBATION, supported=True),
        ],
        providers=["CPUExecutionProvider"],
        num_classes=3,
        preprocessing=model_pb2.Preprocessing(
            resize=[256],
            center_crop=[224, 224],
            color_order=model_pb2.COLOR_ORDER_RGB,
            scale=1 / 255,
            mean=[0.5] * 3,
            std=[0.25] * 3,
            layout=model_pb2.LAYOUT_NCHW,
        ),
    )
    metadata = parse_metadata(message)
    assert isinstance(metadata, ModelMetadata)
    assert (metadata.state, metadata.layout, metadata.output_kind) == ("ready", "nchw", "logits")
    assert metadata.versions == ["1", "2"]
    assert metadata.inputs[0].shape == [-1, 3, 224, 224]
    assert metadata.methods[0].family == "gradient" and metadata.methods[0].reason == "TopK has no gradient"
    assert metadata.supported_methods == ["occlusion"]
    assert metadata.preprocessing["color_order"] == "rgb"
    assert metadata.preprocessing["center_crop"] == [224, 224]
    assert parse_metadata(model_pb2.ModelMetadata(name="raw")).preprocessing is None


def test_statuses_and_methods_use_lower_case_names():
    status = parse_model_status(
        model_pb2.ModelStatus(name="m", version="1", state=model_pb2.MODEL_STATE_UNAVAILABLE, reason="bad graph")
    )
    assert (status.state, status.reason) == ("unavailable", "bad graph")
    method = parse_method_info(
        model_pb2.MethodInfo(
            name="occlusion",
            family=model_pb2.METHOD_FAMILY_PERTURBATION,
            parameters=[model_pb2.ParameterSpec(name="window", type="ints", default_value="8,8")],
        )
    )
    assert method.family == "perturbation"
    assert method.parameters[0].default == "8,8"


def test_enum_values_from_a_newer_server_do_not_fail():
    assert enum_name(model_pb2.ModelState, 99, "MODEL_STATE_") == "unknown_99"
