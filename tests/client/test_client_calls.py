import numpy as np
import pytest

from onnxplain.client import calls
from onnxplain.client.calls import ExplainArgs
from onnxplain.client.evaluation import MethodSpec, Region
from onnxplain.client.targets import TopK
from onnxplain.v1 import explain_service_pb2 as pb


def args(**overrides):
    values = {
        "model": "resnet",
        "images": b"png",
        "method": "occlusion",
        "target": None,
        "version": "",
        "attribution_shape": "spatial",
        "score_space": "raw",
        "overlay": False,
        "colormap": None,
        "params": {},
    }
    values.update(overrides)
    return ExplainArgs(**values)


def test_explain_request_carries_every_option():
    request, single = calls.build_explain_request(
        args(
            images=[b"a", b"b"],
            target=[3, TopK(2)],
            version="2",
            attribution_shape="input",
            score_space="probability",
            params={"window": (4, 4), "abs": True},
        )
    )
    assert single is False
    assert (request.model_name, request.model_version, request.method) == ("resnet", "2", "occlusion")
    assert [image.encoded for image in request.images] == [b"a", b"b"]
    assert request.attribution_shape == pb.ATTRIBUTION_SHAPE_INPUT
    assert request.score_space == pb.SCORE_SPACE_PROBABILITY
    assert [t.WhichOneof("kind") for t in request.targets] == ["class_index", "top_k"]
    assert list(request.parameters["window"].numbers.values) == [4.0, 4.0]
    assert request.parameters["abs"].flag is True
    assert not request.HasField("render")


def test_defaults_are_sent_explicitly():
    request, single = calls.build_explain_request(args())
    assert single is True
    assert request.attribution_shape == pb.ATTRIBUTION_SHAPE_SPATIAL
    assert request.score_space == pb.SCORE_SPACE_RAW


def test_overlay_and_colormap_request_a_rendered_png():
    request, _ = calls.build_explain_request(args(overlay=True))
    assert request.render == pb.RenderOptions(overlay_png=True)
    request, _ = calls.build_explain_request(args(colormap="inferno"))
    assert request.render == pb.RenderOptions(overlay_png=True, colormap="inferno")


@pytest.mark.parametrize(("field", "value"), [("attribution_shape", "chw"), ("score_space", "logits")])
def test_unknown_choices_are_rejected(field, value):
    with pytest.raises(ValueError, match=field):
        calls.build_explain_request(args(**{field: value}))


def test_stream_wraps_the_same_request():
    call = calls.explain_stream(args(target=2))
    assert call.rpc == "ExplainStream"
    assert call.request.request.targets[0].class_index == 2


def test_every_call_names_a_stub_method():
    from onnxplain.v1.explain_service_pb2_grpc import ExplainServiceServicer

    made = [
        calls.predict("m", b"x", version="", top_k=5),
        calls.explain(args()),
        calls.explain_stream(args()),
        calls.evaluate(calls.EvaluateArgs("m", b"x", "rise", (), None, "", None, None, {})),
        calls.list_methods(),
        calls.list_metrics(),
        calls.list_models(),
        calls.model_metadata("m", ""),
        calls.load_model("m", ""),
        calls.unload_model("m", ""),
        calls.reload_model("m", ""),
    ]
    assert {call.rpc for call in made} == {name for name in vars(ExplainServiceServicer) if not name.startswith("_")}


def test_evaluate_request_carries_explainers_regions_and_metric_parameters():
    maps = np.ones((2, 3), dtype=np.float32)
    occlusion = MethodSpec("occlusion", {"window": 4}, name="occ")
    explainers = ["rise", occlusion, MethodSpec(name="mine", attributions=maps)]
    regions = [Region.from_box(1, 2, 3, 4), Region.from_mask(np.eye(2, dtype=bool))]
    request = calls.evaluate(
        calls.EvaluateArgs("m", [b"x", b"y"], explainers, ["deletion"], 3, "2", "probability", regions, {"step": 8})
    ).request
    assert [e.method for e in request.explainers] == ["rise", "occlusion", ""]
    assert request.explainers[1].name == "occ" and request.explainers[1].parameters["window"].integer == 4
    assert request.explainers[2].attributions[0].shape == [2, 3]
    assert request.regions[0].box.height == 3 and list(request.regions[1].mask.shape) == [2, 2]
    assert request.parameters["step"].integer == 8 and request.metrics == ["deletion"]
    assert request.score_space == pb.SCORE_SPACE_PROBABILITY and request.targets[0].class_index == 3
    assert calls.evaluate(calls.EvaluateArgs("m", b"x", "rise", (), None, "", None, None, {})).request.score_space == 0


def test_evaluate_needs_an_explainer():
    with pytest.raises(ValueError, match="no explainers"):
        calls.evaluate(calls.EvaluateArgs("m", b"x", [], (), None, "", None, None, {}))
    with pytest.raises(ValueError, match="method or attributions"):
        calls.evaluate(calls.EvaluateArgs("m", b"x", [MethodSpec()], (), None, "", None, None, {}))
