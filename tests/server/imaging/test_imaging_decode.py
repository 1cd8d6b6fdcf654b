"""decode_image: colour order, depth, alpha, EXIF orientation, the pixel limit, and only InvalidInput for bad data."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onnxplain.server.errors import InvalidInput
from onnxplain.server.imaging.decode import decode_image

LIMIT = 10_000_000


def encode(image: np.ndarray, ext: str, params: list[int] | None = None) -> bytes:
    ok, buffer = cv2.imencode(ext, image, params or [])
    assert ok, f"cv2.imencode({ext}) failed"
    return buffer.tobytes()


def bgr_with_distinct_channels(height: int = 8, width: int = 10) -> np.ndarray:
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[..., 0] = 10  # B
    image[..., 1] = 120  # G
    image[..., 2] = 250  # R
    return image


@pytest.mark.parametrize("ext", [".png", ".bmp", ".webp"])
def test_colour_orders(ext: str) -> None:
    data = encode(bgr_with_distinct_channels(), ext, [cv2.IMWRITE_WEBP_QUALITY, 101] if ext == ".webp" else [])
    rgb = decode_image(data, "rgb", LIMIT)
    bgr = decode_image(data, "bgr", LIMIT)
    gray = decode_image(data, "gray", LIMIT)
    assert rgb.shape == bgr.shape == (8, 10, 3) and gray.shape == (8, 10, 1)
    assert rgb.dtype == bgr.dtype == gray.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (250, 120, 10)
    assert tuple(bgr[0, 0]) == (10, 120, 250)
    expected_gray = round(0.299 * 250 + 0.587 * 120 + 0.114 * 10)
    assert abs(int(gray[0, 0, 0]) - expected_gray) <= 1
    assert rgb.flags.c_contiguous and bgr.flags.c_contiguous and gray.flags.c_contiguous


def test_gray_source_decoded_as_colour_has_three_equal_channels() -> None:
    data = encode(np.full((4, 5), 77, dtype=np.uint8), ".png")
    rgb = decode_image(data, "rgb", LIMIT)
    assert rgb.shape == (4, 5, 3) and np.all(rgb == 77)


def test_sixteen_bit_png_becomes_eight_bit() -> None:
    image = np.zeros((6, 7, 3), dtype=np.uint16)
    image[..., 0], image[..., 1], image[..., 2] = 0x1000, 0x8000, 0xFFFF  # B, G, R
    rgb = decode_image(encode(image, ".png"), "rgb", LIMIT)
    assert rgb.dtype == np.uint8 and rgb.shape == (6, 7, 3)
    assert tuple(rgb[0, 0]) == (0xFF, 0x80, 0x10)
    gray = decode_image(encode(image[..., 1], ".png"), "gray", LIMIT)
    assert gray.dtype == np.uint8 and gray.shape == (6, 7, 1) and gray[0, 0, 0] == 0x80


def test_alpha_is_dropped() -> None:
    image = np.zeros((5, 5, 4), dtype=np.uint8)
    image[..., :3] = (30, 60, 90)
    image[..., 3] = 128
    rgb = decode_image(encode(image, ".png"), "rgb", LIMIT)
    assert rgb.shape == (5, 5, 3)
    # OpenCV drops the alpha channel; compositing over black would darken, so accept either.
    assert tuple(rgb[0, 0]) in {(90, 60, 30), (45, 30, 15)}


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an APP1 Exif segment holding one IFD0 entry, Orientation (0x0112, SHORT), right after SOI."""
    entry = struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + entry + struct.pack("<I", 0)
    payload = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + app1 + jpeg[2:]


def test_exif_orientation_is_applied() -> None:
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    image[:10, :10] = 255  # a white top-left corner
    data = with_exif_orientation(encode(image, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95]), 6)
    for color, channels in (("rgb", 3), ("bgr", 3), ("gray", 1)):
        decoded = decode_image(data, color, LIMIT)
        assert decoded.shape == (60, 40, channels)
    # Orientation 6 means "rotate 90 degrees clockwise to display": the top-left corner moves to the top right.
    decoded = decode_image(data, "gray", LIMIT)[..., 0]
    assert decoded[:8, -8:].mean() > 200 and decoded[:8, :8].mean() < 50
    # Orientation 1 is a no-op.
    assert decode_image(with_exif_orientation(encode(image, ".jpg"), 1), "rgb", LIMIT).shape == (40, 60, 3)


def png_header_only(height: int, width: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\x00\x00\x00\x00"


def test_pixel_limit_is_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(*args: object) -> None:
        raise AssertionError("the image was decoded before its size was checked")

    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    data = png_header_only(100_000, 100_000)
    with pytest.raises(InvalidInput, match=r"100000x100000 = 10000000000 pixels, above the limit of 10000000"):
        decode_image(data, "rgb", LIMIT)


def test_pixel_limit_is_inclusive() -> None:
    data = encode(np.zeros((10, 10, 3), np.uint8), ".png")
    assert decode_image(data, "rgb", 100).shape == (10, 10, 3)
    with pytest.raises(InvalidInput, match="above the limit of 99"):
        decode_image(data, "rgb", 99)


def test_header_only_png_within_the_limit_fails_to_decode() -> None:
    with pytest.raises(InvalidInput, match="could not decode the image"):
        decode_image(png_header_only(10, 10), "rgb", LIMIT)


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"GIF89a" + bytes(30)])
def test_bad_data(data: bytes) -> None:
    with pytest.raises(InvalidInput):
        decode_image(data, "rgb", LIMIT)


def test_unknown_colour_order_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="colour order"):
        decode_image(encode(np.zeros((2, 2, 3), np.uint8), ".png"), "rgba", LIMIT)  # type: ignore[arg-type]


VALID = {
    ext: encode(np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8), ext)
    for ext in (".png", ".jpg", ".bmp", ".webp")
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ext=st.sampled_from(sorted(VALID)), cut=st.floats(min_value=0.0, max_value=0.99))
def test_truncated_images_raise_invalid_input_or_decode(ext: str, cut: float) -> None:
    data = VALID[ext]
    truncated = data[: int(len(data) * cut)]
    try:
        image = decode_image(truncated, "rgb", LIMIT)
    except InvalidInput:
        return
    # Some decoders (libjpeg) fill in a truncated image rather than fail; then the shape must still be right.
    assert image.shape == (24, 32, 3) and image.dtype == np.uint8


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ext=st.sampled_from(sorted(VALID)), data=st.data())
def test_corrupted_images_raise_invalid_input_or_decode(ext: str, data: st.DataObject) -> None:
    raw = bytearray(VALID[ext])
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        image = decode_image(bytes(raw), data.draw(st.sampled_from(["rgb", "bgr", "gray"])), LIMIT)
    except InvalidInput:
        return
    assert image.dtype == np.uint8 and image.ndim == 3


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8", b"BM", b"RIFF\x00\x00\x00\x00WEBP"]),
    body=st.binary(max_size=200),
)
def test_random_bytes_raise_only_invalid_input(prefix: bytes, body: bytes) -> None:
    try:
        image = decode_image(prefix + body, "rgb", LIMIT)
    except InvalidInput:
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
