"""Evaluate through the public API on the demo model: methods beat a random map, client maps score like the method
that made them, localisation is measured in the original image's pixels, and every bad request is refused clearly."""

from __future__ import annotations

import cv2
import grpc
import numpy as np
import pytest
from support.processes import cpu_of
from support.servers import RunningServer

from onnxplain.client import Client, MethodSpec, OnnxplainError, Region
from onnxplain.server.demo import SAMPLES

DEMO = "digits"
# The demo server runs with the default --max-forward-passes.
PASSES_PER_IMAGE = 100_000
LIMIT = f"the server allows {PASSES_PER_IMAGE:,} per image"
IMAGES = [SAMPLES / f"{stem}.png" for stem in ("digit_3_clean", "digit_4_strokes", "digit_6_clean", "digit_7_strokes")]


def random_maps(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((28, 28), dtype=np.float32) for _ in range(count)]


def digit_mask(stem: str) -> np.ndarray:
    """The sample's digit pixels at its original 112x112 (the mask files mark 1 digit, 2 distracting strokes)."""
    return cv2.imread(str(SAMPLES / f"{stem}_mask.png"), cv2.IMREAD_GRAYSCALE) == 1


def test_rise_and_grad_cam_beat_a_random_map_on_deletion_and_insertion(demo_client: Client) -> None:
    random = MethodSpec(name="random", attributions=random_maps(len(IMAGES)))
    evaluation = demo_client.evaluate(
        DEMO, IMAGES, methods=["rise", "grad_cam", random], metrics=["deletion", "insertion"]
    )
    table = evaluation.table
    for method in ("rise", "grad_cam"):
        assert table[method]["deletion"] < table["random"]["deletion"], table
        assert table[method]["insertion"] > table["random"]["insertion"], table
    curve = evaluation["rise"].images[0][0].curves["deletion"]
    assert curve.shape == (29,)  # step defaults to the input width: 28 steps over 28x28, plus the start
    # Deletion ends at the all-zero input for every explainer, so the last points agree.
    assert curve[-1] == pytest.approx(evaluation["random"].images[0][0].curves["deletion"][-1], rel=1e-5)


def test_client_maps_score_like_the_method_that_made_them(demo_client: Client) -> None:
    """Every explainer meets the same perturbations, so the same maps give the same values to the last digit."""
    maps = [demo_client.explain(DEMO, image, method="grad_cam").attribution for image in IMAGES]
    metrics = ["deletion", "insertion", "faithfulness_correlation", "infidelity"]
    sent = MethodSpec(name="sent", attributions=maps)
    evaluation = demo_client.evaluate(DEMO, IMAGES, methods=["grad_cam", sent], metrics=metrics)
    for metric in metrics:
        assert evaluation.table["sent"][metric] == pytest.approx(evaluation.table["grad_cam"][metric], rel=1e-6)
    assert evaluation["sent"].method == "" and evaluation["sent"].cost.backward_passes == 0
    assert evaluation["grad_cam"].cost.backward_passes == len(IMAGES)


def test_localisation_is_measured_in_the_original_pixels(demo_client: Client) -> None:
    stems = ("digit_4_strokes", "digit_6_strokes", "digit_7_strokes")
    images = [SAMPLES / f"{stem}.png" for stem in stems]
    masks = [digit_mask(stem) for stem in stems]
    regions = [Region.from_mask(mask) for mask in masks]
    evaluation = demo_client.evaluate(
        DEMO, images, methods=["grad_cam"], metrics=["pointing_game", "mass_in_region"], regions=regions, tolerance=3
    )
    for image, mask, scores in zip(images, masks, evaluation["grad_cam"].images, strict=True):
        original = demo_client.explain(DEMO, image, method="grad_cam", original_maps=True).original_attribution
        assert original.shape == mask.shape == (112, 112)
        y, x = np.unravel_index(np.argmax(original), original.shape)
        ys, xs = np.nonzero(mask)
        hit = float(((ys - y) ** 2 + (xs - x) ** 2 < 3**2).any())
        positive = np.maximum(original, 0)
        assert scores[0].values["pointing_game"] == hit
        assert scores[0].values["mass_in_region"] == pytest.approx(positive[mask].sum() / positive.sum(), rel=1e-5)
    # Grad-CAM looks at the digit, not at the strokes drawn to distract it.
    assert evaluation.table["grad_cam"]["pointing_game"] == 1.0


def test_a_box_region_counts_like_the_mask_it_covers(demo_client: Client) -> None:
    image = SAMPLES / "digit_6_clean.png"
    mask = np.zeros((112, 112), dtype=bool)
    mask[20:80, 30:90] = True
    by_box = demo_client.evaluate(
        DEMO, image, methods="saliency", metrics=["mass_in_region"], regions=Region.from_box(20, 30, 60, 60)
    )
    by_mask = demo_client.evaluate(
        DEMO, image, methods="saliency", metrics=["mass_in_region"], regions=Region.from_mask(mask)
    )
    assert by_box.table == by_mask.table


def test_original_maps_cover_the_original_image(demo_client: Client) -> None:
    explanation = demo_client.explain(DEMO, IMAGES[0], method="occlusion", window=4, stride=2, original_maps=True)
    original = explanation.original_attribution
    assert original.shape == (112, 112)
    # The demo resizes 112 -> 28: taking the original map back down gives the model-input map again.
    down = cv2.resize(original, (28, 28), interpolation=cv2.INTER_AREA)
    assert np.corrcoef(down.ravel(), explanation.attribution.ravel())[0, 1] > 0.99
    assert demo_client.explain(DEMO, IMAGES[0], method="occlusion").original_attribution is None


def test_the_sanity_check_randomises_every_layer_from_the_top(demo_client: Client) -> None:
    evaluation = demo_client.evaluate(DEMO, IMAGES[:2], methods=["saliency"], metrics=["parameter_randomization"])
    sanity = evaluation["saliency"].sanity
    assert sanity is not None and len(sanity.layers) == len(sanity.rank_correlations) >= 2
    for scores in evaluation["saliency"].images:
        curve = scores[0].curves["parameter_randomization"]
        assert curve.shape == (len(sanity.layers),)
        assert scores[0].values["parameter_randomization"] == pytest.approx(curve[-1])
    # Plain gradients depend on the weights: after the cascade the maps no longer rank pixels like the original.
    assert not sanity.flagged and sanity.rank_correlations[-1] < sanity.threshold
    grouped = demo_client.evaluate(
        DEMO, IMAGES[0], methods=["saliency"], metrics=["parameter_randomization"], randomization_steps=2
    )
    assert len(grouped["saliency"].sanity.layers) == 2
    assert grouped["saliency"].sanity.layers[-1] == sanity.layers[-1]


def test_the_sanity_check_flags_maps_that_show_the_input_rather_than_the_model(demo_client: Client) -> None:
    """Adebayo et al.: gradient x input keeps the input's structure (here the black background stays zero) whatever
    the weights, so its maps survive randomisation; the plain gradient's do not."""
    evaluation = demo_client.evaluate(
        DEMO, IMAGES[:2], methods=["gradient_x_input", "saliency"], metrics=["parameter_randomization"]
    )
    assert evaluation["gradient_x_input"].sanity.flagged
    assert not evaluation["saliency"].sanity.flagged
    assert evaluation.table["gradient_x_input"]["parameter_randomization"] > 0.9


def test_max_sensitivity_re_explains_noisy_copies(demo_client: Client) -> None:
    evaluation = demo_client.evaluate(
        DEMO, IMAGES[0], methods=["saliency"], metrics=["max_sensitivity"], sensitivity_samples=4
    )
    value = evaluation.table["saliency"]["max_sensitivity"]
    assert 0.0 < value < 10.0
    # The first forward scores the image; each sample scores and explains one noisy copy.
    assert evaluation["saliency"].cost.backward_passes == 1 + 4


def test_metrics_are_listed_with_their_parameters(demo_client: Client) -> None:
    metrics = {metric.name: metric for metric in demo_client.metrics()}
    assert set(metrics) == {
        "deletion",
        "insertion",
        "faithfulness_correlation",
        "infidelity",
        "max_sensitivity",
        "pointing_game",
        "mass_in_region",
        "parameter_randomization",
    }
    assert not metrics["deletion"].higher_is_better and metrics["insertion"].higher_is_better
    assert metrics["pointing_game"].requires == ["region"]
    assert {p.name for p in metrics["faithfulness_correlation"].parameters} >= {"faithfulness_runs", "subset_size"}


def test_defaults_and_parameters_are_reported(demo_client: Client) -> None:
    evaluation = demo_client.evaluate(
        DEMO, IMAGES[0], methods=MethodSpec(name="r", attributions=random_maps(1)[0]), step=56
    )
    assert evaluation.metrics == ["deletion", "insertion", "faithfulness_correlation", "infidelity"]
    assert evaluation.parameters["step"] == 56 and evaluation.parameters["faithfulness_runs"] == 100
    assert evaluation["r"].images[0][0].curves["deletion"].shape == (15,)  # 784 / 56 = 14 steps


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"methods": "saliency", "metrics": ["accuracy"]}, "unknown metric(s) accuracy"),
        ({"methods": "saliency", "metrics": ["pointing_game"]}, "need regions"),
        ({"methods": "saliency", "metrics": ["deletion", "deletion"]}, "more than once"),
        ({"methods": "saliency", "steps": 3}, "unknown parameter(s) steps for metrics"),
        ({"methods": "saliency", "step": 0}, "parameter 'step'"),
        ({"methods": "saliency", "faithfulness_runs": 10**6}, "at most"),
        ({"methods": "saliency", "baseline": "grey"}, "must be one of black, zero, mean"),
        ({"methods": "no_such_method"}, "no_such_method"),
        ({"methods": ["saliency", "saliency"]}, "names must differ"),
        ({"methods": "feature_visualization"}, "no map to evaluate"),
        ({"methods": MethodSpec(name="m", attributions=[np.zeros((28, 28))] * 2)}, "2 maps for 1 images"),
        ({"methods": MethodSpec(name="m", attributions=[np.zeros((27, 28))])}, "do not match"),
        ({"methods": MethodSpec(name="m", attributions=[np.full((28, 28), np.nan)])}, "NaN"),
        (
            {"methods": MethodSpec(name="m", attributions=[np.zeros((28, 28))]), "metrics": ["max_sensitivity"]},
            "no method",
        ),
        ({"methods": "saliency", "regions": Region.from_box(200, 200, 5, 5)}, "lies outside"),
        ({"methods": "saliency", "regions": Region.from_box(0, 0, 0, 5)}, "must be positive"),
        (
            {"methods": "saliency", "regions": Region.from_mask(np.ones((28, 28)))},
            "does not match the image's [112, 112]",
        ),
        ({"methods": "saliency", "regions": [Region.from_box(0, 0, 5, 5)] * 2}, "2 regions for 1 images"),
        ({"methods": MethodSpec("occlusion", {"window": 0})}, "parameter 'window'"),
        ({"methods": "saliency", "window": 4}, "unknown parameter(s) window for metrics"),
    ],
)
def test_bad_requests_are_refused_with_a_clear_message(demo_client: Client, kwargs: dict, message: str) -> None:
    with pytest.raises(OnnxplainError) as raised:
        demo_client.evaluate(DEMO, IMAGES[0], **kwargs)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in str(raised.value)


def rise(masks: int, name: str = "") -> MethodSpec:
    return MethodSpec(method="rise", params={"num_masks": masks}, name=name)


@pytest.mark.parametrize(
    ("images", "kwargs", "words"),
    [
        # Each of 2 samples explains the noisy image again: 40,000 + 2 x (1 + 40,000), and the scoring pass.
        (
            1,
            {"methods": [rise(40_000)], "metrics": ["max_sensitivity"], "sensitivity_samples": 2},
            ["needs 120,003 forward passes", "scoring 1, methods 40,000, max_sensitivity 80,002", LIMIT],
        ),
        # The demo model has 4 weighted layers: 4 cascade steps explain the image again.
        (
            1,
            {"methods": [rise(30_000)], "metrics": ["parameter_randomization"]},
            ["needs 150,005 forward passes", "parameter_randomization 120,004", LIMIT],
        ),
        # Explainers times images: each explainer's 60,000 masks and the default metrics' 170 passes per image.
        (
            2,
            {"methods": [rise(60_000, "a"), rise(60_000, "b")]},
            ["needs 240,682 forward passes (2 explainers on 2 images", f"{2 * PASSES_PER_IMAGE:,} for 2 images"],
        ),
        (64, {"methods": [rise(100_000, f"r{i}") for i in range(32)]}, ["32 explainers on 64 images", LIMIT]),
        (1, {"methods": [rise(100_000, f"r{i}") for i in range(33)]}, ["33 explainers; the limit is 32"]),
        (64, {"methods": [rise(100_000, f"r{i}") for i in range(10_000)]}, ["10000 explainers; the limit is 32"]),
    ],
)
def test_a_request_over_the_pass_limit_is_refused_with_the_numbers(
    demo_client: Client, images: int, kwargs: dict, words: list[str]
) -> None:
    with pytest.raises(OnnxplainError) as raised:
        demo_client.evaluate(DEMO, [IMAGES[0]] * images, **kwargs)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    for word in words:
        assert word in raised.value.message, raised.value.message


def test_the_refusal_comes_before_any_explanation_runs(demo_server: RunningServer, demo_client: Client) -> None:
    """Judged in the server's CPU seconds, which a busy machine does not change: refusing 40,000 masks (and two
    re-runs of them) costs the server less than explaining with a twentieth of the masks does."""
    over = {"methods": [rise(40_000)], "metrics": ["max_sensitivity"], "sensitivity_samples": 2}

    def refused() -> None:
        with pytest.raises(OnnxplainError):
            demo_client.evaluate(DEMO, IMAGES[0], **over)

    reference = cpu_of(
        demo_server.process.pid, lambda: demo_client.explain(DEMO, IMAGES[0], method="rise", num_masks=2000)
    )
    assert cpu_of(demo_server.process.pid, refused) < reference
