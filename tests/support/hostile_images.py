"""Encoded images built to cost the decoder far more than their size suggests."""

from __future__ import annotations


def with_last_scan_repeated(jpeg: bytes, times: int) -> bytes:
    """The JPEG with its last scan (SOS marker through its entropy-coded data) written `times` more times.

    The scan's end is found the way libjpeg writes it: the next 0xFF that is not a stuffed zero or a restart marker.
    Decoders accept the repeats, and a progressive decoder redoes the scan's work for each one.
    """
    start = jpeg.rfind(b"\xff\xda")
    end = start + 2
    while not (jpeg[end] == 0xFF and jpeg[end + 1] not in (0x00, *range(0xD0, 0xD8))):
        end += 1
    return jpeg[:end] + jpeg[start:end] * times + jpeg[end:]
