"""probe_size reads the size from the header alone and agrees with what OpenCV decodes."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.hostile_images import with_last_scan_repeated

from onnxplain.server.errors import InvalidInput
from onnxplain.server.imaging.header import jpeg_scan_count, probe_size

SIDES = st.integers(min_value=1, max_value=300)
FORMATS = {
    "png": (".png", []),
    "jpeg": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 80]),
    "jpeg-progressive": (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    "bmp": (".bmp", []),
    "webp-lossy": (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]),
    "webp-lossless": (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),
}


def encode(image: np.ndarray, ext: str, params: list[int] | None = None) -> bytes:
    ok, buffer = cv2.imencode(ext, image, params or [])
    assert ok, f"cv2.imencode({ext}) failed"
    return buffer.tobytes()


def image_of(height: int, width: int, channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(height * 1000 + width)
    shape = (height, width) if channels == 1 else (height, width, channels)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@settings(max_examples=15, deadline=None)
@given(height=SIDES, width=SIDES)
def test_header_size_matches_decoded_size(fmt: str, height: int, width: int) -> None:
    ext, params = FORMATS[fmt]
    data = encode(image_of(height, width), ext, params)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert probe_size(data) == decoded.shape[:2] == (height, width)


@settings(max_examples=10, deadline=None)
@given(height=SIDES, width=SIDES)
def test_webp_extended_header(height: int, width: int) -> None:
    # Lossy WebP with alpha is written as VP8X + ALPH + VP8.
    data = encode(image_of(height, width, 4), ".webp", [cv2.IMWRITE_WEBP_QUALITY, 80])
    assert data[12:16] == b"VP8X"
    assert probe_size(data) == (height, width)


@pytest.mark.parametrize("ext", [".png", ".bmp", ".jpg"])
def test_gray_images(ext: str) -> None:
    assert probe_size(encode(image_of(17, 29, 1), ext)) == (17, 29)


def test_sixteen_bit_png() -> None:
    image = np.full((11, 13, 3), 40000, dtype=np.uint16)
    assert probe_size(encode(image, ".png")) == (11, 13)


def core_header_bmp(height: int, width: int) -> bytes:
    """A 24-bit BMP with the old OS/2 BITMAPCOREHEADER (12 bytes, 16-bit sizes)."""
    row = (width * 3 + 3) // 4 * 4
    pixels = bytes(row * height)
    offset = 14 + 12
    file_header = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    core = struct.pack("<IHHHH", 12, width, height, 1, 24)
    return file_header + core + pixels


def test_bmp_core_header() -> None:
    data = core_header_bmp(7, 9)
    assert probe_size(data) == (7, 9)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None and decoded.shape[:2] == (7, 9)


def test_bmp_top_down_negative_height() -> None:
    data = bytearray(encode(image_of(12, 8), ".bmp"))
    (height,) = struct.unpack("<i", data[22:26])
    data[22:26] = struct.pack("<i", -height)
    assert probe_size(bytes(data)) == (12, 8)
    decoded = cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape[:2] == (12, 8)


def test_jpeg_skips_segments_before_the_frame() -> None:
    data = encode(image_of(33, 44), ".jpg")
    comment = b"\xff\xfe" + struct.pack(">H", 2 + 300) + b"\xc0" * 300  # SOF-looking bytes inside a COM segment
    assert probe_size(data[:2] + comment + data[2:]) == (33, 44)


def test_jpeg_fill_bytes_before_a_marker() -> None:
    data = encode(image_of(5, 6), ".jpg")
    assert probe_size(data[:2] + b"\xff\xff\xff" + data[2:]) == (5, 6)


def test_empty_data() -> None:
    with pytest.raises(InvalidInput, match="empty"):
        probe_size(b"")


@pytest.mark.parametrize("data", [b"hello world", b"GIF89a" + bytes(20), b"\x00" * 100, b"RIFF\x00\x00\x00\x00WAVE"])
def test_unknown_format(data: bytes) -> None:
    with pytest.raises(InvalidInput, match="not a PNG, JPEG, BMP or WebP image"):
        probe_size(data)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_truncated_headers(fmt: str) -> None:
    ext, params = FORMATS[fmt]
    data = encode(image_of(20, 30), ext, params)
    ends = {".png": 24, ".bmp": 26, ".webp": 25 if data[12:16] == b"VP8L" else 30}
    # Every prefix shorter than the header fails with InvalidInput; the header alone is enough.
    end = ends.get(ext) or _jpeg_frame_end(data)
    for size in range(1, end):
        with pytest.raises(InvalidInput):
            probe_size(data[:size])
    assert probe_size(data[:end]) == (20, 30)


def _jpeg_frame_end(data: bytes) -> int:
    """The offset just past the width field of the first SOF0/SOF2 segment."""
    positions = [p for p in (data.find(b"\xff\xc0"), data.find(b"\xff\xc2")) if p >= 0]
    return min(positions) + 9


def test_png_zero_size_is_rejected() -> None:
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", 0, 10) + bytes(9)
    with pytest.raises(InvalidInput, match="empty image"):
        probe_size(data)


def test_jpeg_without_frame() -> None:
    with pytest.raises(InvalidInput, match="JPEG"):
        probe_size(b"\xff\xd8\xff\xd9")
    with pytest.raises(InvalidInput, match="JPEG"):
        probe_size(b"\xff\xd8\xff\xda\x00\x08" + bytes(10))


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8", b"BM", b"RIFF\x00\x00\x00\x00WEBP"]),
    body=st.binary(max_size=80),
)
def test_random_bytes_give_a_size_or_invalid_input(prefix: bytes, body: bytes) -> None:
    try:
        height, width = probe_size(prefix + body)
    except InvalidInput:
        return
    assert height > 0 and width > 0


@pytest.mark.parametrize(
    ("channels", "progressive", "scans"),
    # libjpeg's jpeg_simple_progression: 10 scans for YCbCr, 6 for grayscale; baseline interleaves into one scan.
    [(3, 1, 10), (1, 1, 6), (3, 0, 1), (1, 0, 1)],
)
def test_jpeg_scan_count_matches_libjpeg_scripts(channels: int, progressive: int, scans: int) -> None:
    data = encode(image_of(64, 48, channels), ".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, progressive])
    assert jpeg_scan_count(data) == scans


def test_scan_markers_inside_an_exif_thumbnail_or_restart_intervals_are_not_counted() -> None:
    thumbnail = encode(image_of(16, 16), ".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    payload = b"Exif\x00\x00" + thumbnail
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    data = encode(image_of(64, 48), ".jpg", [cv2.IMWRITE_JPEG_RST_INTERVAL, 1])
    with_thumbnail = data[:2] + app1 + data[2:]
    assert cv2.imdecode(np.frombuffer(with_thumbnail, np.uint8), cv2.IMREAD_COLOR).shape == (64, 48, 3)
    assert jpeg_scan_count(with_thumbnail) == 1


def test_repeated_scans_are_counted() -> None:
    data = encode(image_of(64, 48), ".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert jpeg_scan_count(with_last_scan_repeated(data, 500)) == 510
