"""Baseline images that perturbation methods blend removed pixels towards: a constant, the image's per-channel
mean, or the image blurred (removes detail at the perturbation's scale while keeping the colours nearby)."""

from __future__ import annotations

import cv2
import numpy as np

from onnxplain.server.methods.base import ExplainJob

BASELINE_CHOICES = ("mean", "blur")


def baseline_image(job: ExplainJob, baseline: float | str, blur_sigma: float) -> np.ndarray:
    """The job's image shape, float32: `baseline` everywhere for a number, the per-channel mean for 'mean', the
    image under a Gaussian blur of `blur_sigma` pixels for 'blur'."""
    image = job.image
    if baseline == "mean":
        axes = (1, 2) if job.layout == "NCHW" else (0, 1)
        return np.broadcast_to(image.mean(axis=axes, keepdims=True), image.shape).astype(np.float32)
    if baseline == "blur":
        return blurred(image, job.layout, blur_sigma)
    return np.full_like(image, baseline, dtype=np.float32)


def blurred(image: np.ndarray, layout: str, sigma: float) -> np.ndarray:
    """Each channel under a Gaussian blur of `sigma` pixels, borders reflected."""
    hwc = np.transpose(image, (1, 2, 0)) if layout == "NCHW" else image
    result = cv2.GaussianBlur(
        np.ascontiguousarray(hwc, dtype=np.float32), (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT
    )
    result = result.reshape(hwc.shape)
    return np.ascontiguousarray(np.transpose(result, (2, 0, 1)) if layout == "NCHW" else result)
