"""A JPEG that repeats its scans is refused before decoding; ordinary progressive JPEGs decode as before."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from support.hostile_images import with_last_scan_repeated

from onnxplain.server.errors import InvalidInput
from onnxplain.server.imaging.decode import MAX_JPEG_SCANS, decode_image

LIMIT = 10_000_000


def progressive_jpeg() -> bytes:
    image = np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok
    return buffer.tobytes()


def test_repeated_scans_beyond_the_limit_are_refused_before_decoding() -> None:
    # libjpeg's progressive script writes 10 scans; the repeats bring it one above the limit.
    hostile = with_last_scan_repeated(progressive_jpeg(), MAX_JPEG_SCANS - 9)
    with pytest.raises(InvalidInput, match=rf"{MAX_JPEG_SCANS + 1} scans, above the limit of {MAX_JPEG_SCANS}"):
        decode_image(hostile, "rgb", LIMIT)


def test_repeated_scans_up_to_the_limit_are_decoded() -> None:
    at_limit = with_last_scan_repeated(progressive_jpeg(), MAX_JPEG_SCANS - 10)
    assert decode_image(at_limit, "rgb", LIMIT).shape == (64, 48, 3)
