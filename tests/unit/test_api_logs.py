"""Masking secrets in a log read page by page: however the pages fall, no secret (or the start
of one still being written) comes back, and the pages add up to the masked log."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from api.logs import MASK, read_masked, secret_spans
from scheduler.domain.spec import SECRET_MASK

SECRETS = ("s3cr€t-ab", "zz")
PIECES = ("hello ", "é", "s3cr€t-ab", "s3cr", "zz", "z", "\n", "€€", "s3cr€t-abs3cr€t-ab")


def _masked(data: bytes) -> str:
    """The whole log masked at once, the reference the pages must add up to."""
    needles = sorted({secret.encode() for secret in SECRETS}, key=len, reverse=True)
    out, position = bytearray(), 0
    for start, end in secret_spans(data, needles):
        out += data[position:start] + MASK
        position = end
    return (out + data[position:]).decode("utf-8", errors="replace")


def _read_all(path: Path, finished: bool, rng: random.Random) -> tuple[str, int]:
    text, offset = "", 0
    for _ in range(10_000):
        page, following = read_masked(path, offset, rng.randint(1, 7), SECRETS, finished)
        if following == offset and not page:
            return text, offset
        text, offset = text + page, following
    raise AssertionError("the pages never reached the end")


def test_pages_of_random_logs_never_show_a_secret(tmp_path: Path) -> None:
    rng = random.Random(7)
    for case in range(400):
        raw = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 12))).encode()
        finished = rng.random() < 0.5
        data = raw if finished else raw[:rng.randint(0, len(raw))]
        path = tmp_path / f"{case}.log"
        path.write_bytes(data)
        text, offset = _read_all(path, finished, rng)
        assert not any(secret in text for secret in SECRETS), (data, text)
        whole = _masked(raw)
        if finished:
            assert offset == len(data) and "\ufffd" not in text
            # A trailing piece that starts a secret is masked too once the log is complete.
            head = text.removesuffix(SECRET_MASK)
            assert text == whole or (whole.startswith(head) and any(
                secret.startswith(whole[len(head):]) for secret in SECRETS)), (data, text)
        else:
            assert whole.startswith(text), (data, text, whole)


@pytest.mark.parametrize(("data", "offset", "max_bytes", "finished", "page", "following"), [
    (b"token zz here", 0, 100, False, f"token {SECRET_MASK} here", 13),
    (b"token zz here", 0, 7, False, f"token {SECRET_MASK}", 8),  # the page grows over it
    (b"token zz here", 7, 3, False, f"{SECRET_MASK} h", 10),  # starts inside a secret
    (b"ends with z", 0, 100, False, "ends with ", 10),  # z may become zz
    (b"ends with z", 0, 100, True, f"ends with {SECRET_MASK}", 11),
    ("caf\u00e9".encode(), 0, 4, False, "caf", 3),  # no half characters
    ("caf\u00e9".encode(), 3, 1, False, "\u00e9", 5),
    (b"", 0, 10, True, "", 0),
    (b"abc", 10, 10, False, "", 10),
])
def test_page_edges(tmp_path: Path, data: bytes, offset: int, max_bytes: int, finished: bool,
                    page: str, following: int) -> None:
    path = tmp_path / "job.log"
    path.write_bytes(data)
    assert read_masked(path, offset, max_bytes, SECRETS, finished) == (page, following)


def test_no_log_yet(tmp_path: Path) -> None:
    assert read_masked(None, 0, 10, SECRETS, False) == ("", 0)
    assert read_masked(tmp_path / "missing.log", 5, 10, SECRETS, False) == ("", 5)
