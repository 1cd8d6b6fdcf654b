"""Image size from the header alone, so an oversized image (a decompression bomb) is refused before decoding."""

from __future__ import annotations

import re
import struct

from onnxplain.server.errors import InvalidInput

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers: C0..CF except DHT (C4), JPG (C8) and DAC (CC), which share the range.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone, without a length field: TEM and RST0..RST7 (SOI is handled first).
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
# The next marker: 0xFF (fill bytes repeated) then a byte that is not a stuffed zero, a restart marker or more fill.
# Inside entropy-coded data this skips every 0xFF00 and RSTn, so it lands on the marker that ends the scan.
_JPEG_NEXT_MARKER = re.compile(rb"\xff+([^\x00\xd0-\xd7\xff])")
_JPEG_SOS, _JPEG_EOI = 0xDA, 0xD9


def probe_size(data: bytes) -> tuple[int, int]:
    """Return (height, width) read from the header of a PNG, JPEG, BMP or WebP image, without decoding it.

    Raises InvalidInput for empty data, an unknown format or a truncated or malformed header.
    """
    if not data:
        raise InvalidInput("the image is empty")
    if data.startswith(_PNG_SIGNATURE):
        height, width = _png(data)
    elif data.startswith(b"\xff\xd8"):
        height, width = _jpeg(data)
    elif data.startswith(b"BM"):
        height, width = _bmp(data)
    elif data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        height, width = _webp(data)
    else:
        raise InvalidInput("not a PNG, JPEG, BMP or WebP image")
    if height <= 0 or width <= 0:
        raise InvalidInput(f"the image header declares an empty image ({height}x{width})")
    return height, width


def _need(data: bytes, size: int, kind: str) -> None:
    if len(data) < size:
        raise InvalidInput(f"truncated {kind} header: {len(data)} bytes, need at least {size}")


def _png(data: bytes) -> tuple[int, int]:
    _need(data, 24, "PNG")
    if data[12:16] != b"IHDR":
        raise InvalidInput("malformed PNG header: the first chunk is not IHDR")
    width, height = struct.unpack(">II", data[16:24])
    return height, width


def _jpeg(data: bytes) -> tuple[int, int]:
    """Walk the marker segments after SOI up to the first start-of-frame; segments are skipped by their length."""
    pos = 2
    size = len(data)
    while True:
        # Like libjpeg, skip any bytes up to the next 0xFF, then any fill bytes (0xFF repeated).
        ff = data.find(b"\xff", pos)
        if ff < 0:
            break
        pos = ff
        while pos < size and data[pos] == 0xFF:
            pos += 1
        if pos >= size:
            break
        marker = data[pos]
        pos += 1
        if marker == 0x00 or marker in _JPEG_STANDALONE or marker == 0xD8:
            continue
        if marker == 0xD9:
            raise InvalidInput("malformed JPEG: end of image before any frame header")
        if marker == 0xDA:
            raise InvalidInput("malformed JPEG: scan data before any frame header")
        if pos + 2 > size:
            break
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        if length < 2:
            raise InvalidInput(f"malformed JPEG: segment length {length}")
        if marker in _JPEG_SOF:
            # Segment: length (2), sample precision (1), height (2), width (2).
            if pos + 7 > size:
                break
            height, width = struct.unpack(">HH", data[pos + 3 : pos + 7])
            return height, width
        pos += length
    raise InvalidInput("truncated JPEG header: no frame header (SOF) found")


def _bmp(data: bytes) -> tuple[int, int]:
    _need(data, 18, "BMP")
    (header_size,) = struct.unpack("<I", data[14:18])
    if header_size == 12:  # BITMAPCOREHEADER (OS/2 1.x): unsigned 16-bit sizes.
        _need(data, 22, "BMP")
        width, height = struct.unpack("<HH", data[18:22])
        return height, width
    if header_size < 16:
        raise InvalidInput(f"malformed BMP header: unknown DIB header size {header_size}")
    # BITMAPINFOHEADER and its successors (V2..V5, OS/2 2.x): signed 32-bit sizes; a negative height is top-down.
    _need(data, 26, "BMP")
    width, height = struct.unpack("<ii", data[18:26])
    if width < 0:
        raise InvalidInput(f"malformed BMP header: negative width {width}")
    return abs(height), width


def _webp(data: bytes) -> tuple[int, int]:
    _need(data, 16, "WebP")
    chunk = data[12:16]
    if chunk == b"VP8 ":
        # Lossy: frame tag (3 bytes), start code 9D 01 2A, then 14-bit width and height (2 scale bits each).
        _need(data, 30, "WebP")
        if data[23:26] != b"\x9d\x01\x2a":
            raise InvalidInput("malformed WebP (VP8) header: bad start code")
        width, height = struct.unpack("<HH", data[26:30])
        return height & 0x3FFF, width & 0x3FFF
    if chunk == b"VP8L":
        # Lossless: signature 0x2F, then 14 bits width - 1 and 14 bits height - 1, little-endian bit order.
        _need(data, 25, "WebP")
        if data[20] != 0x2F:
            raise InvalidInput("malformed WebP (VP8L) header: bad signature")
        (bits,) = struct.unpack("<I", data[21:25])
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    if chunk == b"VP8X":
        # Extended: flags (1), reserved (3), canvas width - 1 (24 bits), canvas height - 1 (24 bits).
        _need(data, 30, "WebP")
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return height, width
    raise InvalidInput(f"malformed WebP header: unknown chunk {chunk!r}")


def jpeg_scan_count(data: bytes) -> int:
    """Count a JPEG's scans (SOS segments) from its markers, without decoding.

    A progressive JPEG's decoding time grows with its scans, and a few hundred kilobytes can repeat AC scans a
    thousand times: the count bounds that work before the decoder starts. Segments are skipped by their length and
    scan data up to its ending marker, so bytes inside an EXIF thumbnail or a table are never miscounted.
    """
    scans, pos = 0, 2
    while (match := _JPEG_NEXT_MARKER.search(data, pos)) is not None:
        marker, pos = match.group(1)[0], match.end()
        if marker == _JPEG_EOI:
            break
        if marker in _JPEG_STANDALONE or marker == 0xD8 or pos + 2 > len(data):
            continue
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        if marker == _JPEG_SOS:
            scans += 1
        pos += max(length, 2)
    return scans
