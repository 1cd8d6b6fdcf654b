"""Gradient methods through the service equal torch autograd and Captum on the same torch model, for an NCHW model
and its NHWC twin (the same weights behind a channels-last input)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import (
    Deconvolution,
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    Saliency,
)
from support import references
from support.models import SmallCNN
from support.servers import layout_twins_client

IMAGE_SHAPE = (3, 20, 18)
TARGETS = [0, 3]


@pytest.fixture(scope="module")
def torch_model() -> SmallCNN:
    model = SmallCNN(channels=3, classes=5, seed=4).eval()
    with torch.no_grad():  # weights large enough that gradients are not tiny
        for parameter in model.parameters():
            parameter.mul_(3.0)
    return model


@pytest.fixture(scope="module")
def client(tmp_path_factory, torch_model):
    with layout_twins_client(tmp_path_factory.mktemp("repository"), torch_model, IMAGE_SHAPE) as connected:
        yield connected


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(7).normal(size=IMAGE_SHAPE).astype(np.float32)


def explain(client, image: np.ndarray, method: str, layout: str = "NCHW", **kwargs) -> np.ndarray:
    """The service's maps for TARGETS, input-shaped maps returned channels-first whatever the model's layout."""
    model, sent = ("cnn", image) if layout == "NCHW" else ("cnn_nhwc", np.transpose(image, (1, 2, 0)).copy())
    explanation = client.explain(model, sent, method=method, target=TARGETS, **kwargs)
    maps = explanation.attribution
    if layout == "NHWC" and maps.ndim == 4:
        maps = np.transpose(maps, (0, 3, 1, 2))
    return maps


def captum(attribution_class, torch_model, image, **kwargs) -> np.ndarray:
    method = attribution_class(torch_model)
    inputs = torch.from_numpy(image)[None].requires_grad_()
    return np.stack([method.attribute(inputs, target=t, **kwargs)[0].detach().numpy() for t in TARGETS])


def assert_close(actual: np.ndarray, expected: np.ndarray, tolerance: float = 1e-4) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(float(np.abs(expected).max()), 1e-12)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tolerance * scale)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_gradient_equals_torch_autograd(client, torch_model, image, layout) -> None:
    ours = explain(client, image, "gradient", layout, attribution_shape="input")
    expected = captum(Saliency, torch_model, image, abs=False)
    assert_close(ours, expected, 1e-5)


def test_spatial_gradient_sums_channels(client, torch_model, image) -> None:
    ours = explain(client, image, "gradient")
    assert_close(ours, captum(Saliency, torch_model, image, abs=False).sum(axis=1), 1e-5)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_saliency_is_max_abs_over_channels(client, torch_model, image, layout) -> None:
    ours = explain(client, image, "saliency", layout)
    assert_close(ours, captum(Saliency, torch_model, image).max(axis=1), 1e-5)


def test_gradient_x_input_equals_captum(client, torch_model, image) -> None:
    ours = explain(client, image, "gradient_x_input", attribution_shape="input")
    assert_close(ours, captum(InputXGradient, torch_model, image), 1e-5)


@pytest.mark.parametrize(
    ("quadrature", "captum_method", "steps"),
    [
        ("gausslegendre", "gausslegendre", 50),
        ("riemann_right", "riemann_right", 16),
        ("riemann_trapezoid", "riemann_trapezoid", 7),
    ],
)
def test_integrated_gradients_equal_captum(client, torch_model, image, quadrature, captum_method, steps) -> None:
    explanation = client.explain(
        "cnn",
        image,
        method="integrated_gradients",
        target=TARGETS,
        attribution_shape="input",
        steps=steps,
        quadrature=quadrature,
        baseline=0.25,
    )
    method = IntegratedGradients(torch_model)
    inputs = torch.from_numpy(image)[None]
    expected, deltas = [], []
    for target in TARGETS:
        attribution, delta = method.attribute(
            inputs, baselines=0.25, target=target, n_steps=steps, method=captum_method, return_convergence_delta=True
        )
        expected.append(attribution[0].detach().numpy())
        deltas.append(float(delta))
    assert_close(explanation.attribution, np.stack(expected))
    np.testing.assert_allclose(
        explanation.extras["convergence_delta"], deltas, atol=1e-3 * max(1.0, max(map(abs, deltas)))
    )
    assert explanation.cost.backward_passes == len(TARGETS) * steps + 2


def noisy_gradients(torch_model, image, samples: int, noise: float, seed: int) -> np.ndarray:
    """(targets, samples, C, H, W) torch gradients at the noisy points the service documents: N(0, sigma) with
    sigma = noise x (max - min) from numpy's default_rng(seed)."""
    sigma = noise * float(image.max() - image.min())
    points = image[None] + np.random.default_rng(seed).normal(0.0, sigma, (samples, *image.shape))
    inputs = torch.tensor(points.astype(np.float32), requires_grad=True)
    rows = []
    for target in TARGETS:
        (gradient,) = torch.autograd.grad(torch_model(inputs)[:, target].sum(), inputs)
        rows.append(gradient.numpy())
    return np.stack(rows)


@pytest.mark.parametrize(("method", "statistic"), [("smoothgrad", np.mean), ("vargrad", np.var)])
def test_noise_tunnels_equal_torch_at_the_same_points(client, torch_model, image, method, statistic) -> None:
    ours = explain(client, image, method, attribution_shape="input", samples=6, noise=0.2, seed=5)
    expected = statistic(noisy_gradients(torch_model, image, 6, 0.2, 5).astype(np.float64), axis=1)
    assert_close(ours, expected.astype(np.float32), 1e-4)


def test_smoothgrad_squared_without_noise_is_the_squared_gradient(client, torch_model, image) -> None:
    ours = explain(client, image, "smoothgrad_sq", attribution_shape="input", samples=2, noise=0.0)
    assert_close(ours, captum(Saliency, torch_model, image, abs=False) ** 2, 1e-4)


@pytest.mark.parametrize(("method", "reference"), [("guided_backprop", GuidedBackprop), ("deconvnet", Deconvolution)])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_relu_variants_equal_captum(client, torch_model, image, method, reference, layout) -> None:
    ours = explain(client, image, method, layout, attribution_shape="input")
    assert_close(ours, captum(reference, torch_model, image), 1e-5)


def last_feature_map(torch_model, image) -> tuple[torch.Tensor, torch.Tensor]:
    """The ReLU output before global pooling (what the service picks by default) and the logits."""
    inputs = torch.from_numpy(image)[None]
    features = torch_model.features[:5](inputs)
    logits = torch_model.head(torch_model.features[5:](features))
    return features, logits


def class_layer_gradients(torch_model, image) -> tuple[np.ndarray, np.ndarray]:
    """A (C, h, w) and dA (T, C, h, w) for TARGETS, by torch autograd."""
    features, logits = last_feature_map(torch_model, image)
    gradients = [torch.autograd.grad(logits[0, t], features, retain_graph=True)[0][0].numpy() for t in TARGETS]
    return features[0].detach().numpy().astype(np.float64), np.stack(gradients).astype(np.float64)


def bilinear(maps: np.ndarray, size) -> np.ndarray:
    return F.interpolate(torch.from_numpy(maps)[:, None], size=size, mode="bilinear", align_corners=False)[:, 0].numpy()


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_grad_cam_equals_captum(client, torch_model, image, layout) -> None:
    ours = explain(client, image, "grad_cam", layout)
    grad_cam = LayerGradCam(torch_model, torch_model.features[4])
    inputs = torch.from_numpy(image)[None]
    expected = [
        LayerAttribution.interpolate(
            grad_cam.attribute(inputs, target=t, relu_attributions=True), IMAGE_SHAPE[1:], "bilinear"
        )
        for t in TARGETS
    ]
    assert_close(ours, np.concatenate([e.detach().numpy()[:, 0] for e in expected]), 1e-4)


def test_cam_is_class_weights_times_features(client, torch_model, image) -> None:
    ours = explain(client, image, "cam", relu=False)
    activations, _ = class_layer_gradients(torch_model, image)
    weights = torch_model.head.weight.detach().numpy().astype(np.float64)[TARGETS]
    assert_close(ours, bilinear(np.einsum("tc,chw->thw", weights, activations), IMAGE_SHAPE[1:]), 1e-4)


def test_grad_cam_pp_follows_pytorch_grad_cam(client, torch_model, image) -> None:
    ours = explain(client, image, "grad_cam_pp")
    activations, gradients = class_layer_gradients(torch_model, image)
    expected = np.stack([references.grad_cam_pp(activations, g) for g in gradients])
    assert_close(ours, bilinear(expected, IMAGE_SHAPE[1:]), 1e-4)


def test_score_cam_follows_pytorch_grad_cam(client, torch_model, image) -> None:
    ours = explain(client, image, "score_cam")
    activations, _ = class_layer_gradients(torch_model, image)
    upsampled = F.interpolate(
        torch.from_numpy(activations)[None], size=IMAGE_SHAPE[1:], mode="bilinear", align_corners=True
    )[0]
    flat = upsampled.reshape(len(upsampled), -1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    masks = (upsampled - low[:, None, None]) / torch.where(high > low, high - low, 1.0)[:, None, None]
    with torch.no_grad():
        scores = torch_model(torch.from_numpy(image)[None].double().float() * masks[:, None].float())
    weights = torch.softmax(scores[:, TARGETS].T.double(), dim=1).numpy()
    expected = np.maximum(np.einsum("tc,chw->thw", weights, activations), 0)
    assert_close(ours, bilinear(expected, IMAGE_SHAPE[1:]), 1e-4)


def test_guided_grad_cam_equals_captum(client, torch_model, image) -> None:
    ours = explain(client, image, "guided_grad_cam", attribution_shape="input")
    expected = captum(lambda m: GuidedGradCam(m, m.features[4]), torch_model, image)
    assert_close(ours, expected, 1e-4)


def class_jacobian(torch_model, image) -> np.ndarray:
    """(K, C, H, W): every class's input gradient."""
    inputs = torch.from_numpy(image)[None].requires_grad_()
    logits = torch_model(inputs)[0]
    return np.stack(
        [torch.autograd.grad(logits[k], inputs, retain_graph=True)[0][0].numpy() for k in range(len(logits))]
    )


def llorente(jacobian: np.ndarray, target: int, kind: str) -> np.ndarray:
    """The official code's formulas (positive_active_saliency_maps, saliency_maps.py), before its min-max scaling."""
    gradient = jacobian[target]
    others = np.delete(jacobian, target, axis=0)
    kept = {
        "positive_saliency": np.maximum(gradient, 0),
        "negative_saliency": np.maximum(-gradient, 0),
        "active_saliency": np.abs(gradient * (gradient > others.max(axis=0))),
        "inactive_saliency": np.abs(gradient * (gradient < others.min(axis=0))),
    }[kind]
    return kept.max(axis=0)


@pytest.mark.parametrize("kind", ["positive_saliency", "negative_saliency", "active_saliency", "inactive_saliency"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_signed_saliency_equals_the_published_formulas(client, torch_model, image, kind, layout) -> None:
    ours = explain(client, image, kind, layout)
    jacobian = class_jacobian(torch_model, image)
    assert_close(ours, np.stack([llorente(jacobian, t, kind) for t in TARGETS]), 1e-5)


def test_clear_maps_from_every_class_deconvnet_response(client, torch_model, image) -> None:
    explanation = client.explain("cnn", image, method="clear", target=TARGETS)
    deconvnet = Deconvolution(torch_model)
    inputs = torch.from_numpy(image)[None]
    responses = np.stack([deconvnet.attribute(inputs, target=k)[0].detach().numpy().sum(axis=0) for k in range(5)])
    assert_close(explanation.attribution, responses[TARGETS], 1e-5)
    np.testing.assert_array_equal(explanation.extras["dominant_class"], responses.argmax(axis=0))
    assert_close(explanation.extras["dominant_response"], responses.max(axis=0), 1e-5)
    assert explanation.cost.backward_passes == 5


def test_feature_visualization_raises_the_class_score(client, torch_model, image) -> None:
    explanation = client.explain("cnn", image, method="feature_visualization", target=[2], steps=30, jitter=1)
    synthesized = explanation.attribution[0]
    assert synthesized.shape == IMAGE_SHAPE
    start = np.random.default_rng(0).normal(0.5, 0.01, IMAGE_SHAPE).astype(np.float32)
    with torch.no_grad():
        before = torch_model(torch.from_numpy(start)[None])[0]
        after = torch_model(torch.from_numpy(synthesized)[None])[0]
    assert after[2] - before[2] > 1.0
    assert int(after.argmax()) == 2
