"""Read a slice of a job's log with its secret env values masked, however the slice falls.

A client pages through a log by byte offsets. Masking each slice on its own would leak the part
of a secret that straddles two slices, so :func:`read_masked` reads a little around the slice:
``len(longest secret) − 1`` bytes before and after it. A secret that crosses the slice's end
makes the slice longer (the whole secret is masked and the next offset lies after it); a secret
that crosses its start is masked at the start. At the end of a log that may still grow, the
slice stops before a trailing piece that could be the start of a secret, or of a multi-byte
character, until the rest is written (once the job has finished, the piece is masked).
"""

from __future__ import annotations

from pathlib import Path

from scheduler.domain.spec import SECRET_MASK
from scheduler.gangs.backend import FileLog, LogSource

MASK = SECRET_MASK.encode()
UTF8_MAX_BYTES = 4


def read_masked(log: LogSource | Path | None, offset: int, max_bytes: int,
                secrets: tuple[str, ...], finished: bool) -> tuple[str, int]:
    """The text of ``log`` (a gang's log through its backend, or a file) from byte ``offset``
    (about ``max_bytes`` of it), secrets masked, and the offset to read from next."""
    source = FileLog(log) if isinstance(log, Path) else log
    size = source.size() if source is not None else 0
    if source is None or offset >= size:
        return "", offset
    needles = sorted({secret.encode() for secret in secrets if secret}, key=len, reverse=True)
    margin = max([UTF8_MAX_BYTES, *(len(needle) for needle in needles)]) - 1
    start = offset - min(offset, margin)
    window = source.read(start, offset - start + max_bytes + margin)
    first = offset - start
    end = min(first + max_bytes, len(window))
    at_eof = start + len(window) >= size
    final = finished and at_eof  # nothing more will be written after the window
    if not (final and end == len(window)):
        end = whole_characters_end(window, end, first)
    spans = secret_spans(window, needles)
    for span_start, span_end in spans:
        if span_start < end < span_end:
            end = span_end
    if at_eof:
        floor = max([first, *(span_end for _, span_end in spans)])
        piece = len(window) - partial_secret_tail(window, floor, needles)
        if piece < end and not final:
            end = piece
        elif piece < end:
            spans.append((piece, len(window)))
            end = len(window)
    out = bytearray()
    position = first
    for span_start, span_end in spans:
        if span_end <= position or span_start >= end:
            continue
        out += window[position:max(span_start, position)] + MASK
        position = max(span_end, position)
    out += window[position:end]
    return out.decode("utf-8", errors="replace"), start + max(end, first)


def secret_spans(data: bytes, needles: list[bytes]) -> list[tuple[int, int]]:
    """Where the secrets occur in ``data``, as sorted, merged [start, end) ranges."""
    found = []
    for needle in needles:
        index = data.find(needle)
        while index >= 0:
            found.append((index, index + len(needle)))
            index = data.find(needle, index + 1)
    merged: list[tuple[int, int]] = []
    for span_start, span_end in sorted(found):
        if merged and span_start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], span_end))
        else:
            merged.append((span_start, span_end))
    return merged


def partial_secret_tail(data: bytes, floor: int, needles: list[bytes]) -> int:
    """Length of the longest suffix of ``data`` (starting at or after ``floor``) that is a
    proper prefix of a secret: the start of a secret still being written."""
    longest, end = 0, len(data)
    for needle in needles:
        for length in range(min(len(needle) - 1, end - floor), longest, -1):
            if data[end - length:] == needle[:length]:
                longest = length
                break
    return longest


def whole_characters_end(data: bytes, end: int, floor: int) -> int:
    """``end``, moved so that ``data[floor:end]`` does not end inside a UTF-8 character: back
    to the character's start, or past its end when it is the slice's only one."""
    lead = end - 1
    while lead > max(floor, end - UTF8_MAX_BYTES) and data[lead] & 0xC0 == 0x80:
        lead -= 1
    if lead < floor or lead >= len(data):
        return end
    byte = data[lead]
    width = 1 if byte < 0x80 else 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
    if lead + width <= end:
        return end
    if lead > floor:
        return lead
    # A slice shorter than its first character: take the whole character once it is there.
    return lead + width if lead + width <= len(data) else floor
