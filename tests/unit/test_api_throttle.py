"""The failed-authentication throttle (api.throttle): per address, over a sliding window."""

from __future__ import annotations

import pytest

from api.throttle import AuthThrottle


class Clock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def clock() -> Clock:
    return Clock()


def failing(clock: Clock, times: int, client: str = "10.0.0.1", every_s: float = 1.0,
            throttle: AuthThrottle | None = None) -> AuthThrottle:
    """A throttle of limit 10 and window 60 s after ``times`` failures, ``every_s`` apart."""
    throttle = throttle or AuthThrottle(limit=10, window_s=60.0, clock=clock)
    for _ in range(times):
        throttle.record_failure(client)
        clock.now_s += every_s
    return throttle


def test_an_address_is_blocked_at_its_tenth_failure_in_the_window(clock: Clock) -> None:
    throttle = failing(clock, 9)
    assert throttle.retry_after_s("10.0.0.1") is None
    failing(clock, 1, throttle=throttle, every_s=0.0)
    # The oldest failure was 9 s ago: it leaves the 60 s window in 51 s.
    assert throttle.retry_after_s("10.0.0.1") == pytest.approx(51.0)


def test_other_addresses_are_not_affected(clock: Clock) -> None:
    throttle = failing(clock, 10)
    assert throttle.retry_after_s("10.0.0.1") is not None
    assert throttle.retry_after_s("10.0.0.2") is None


def test_the_block_ends_when_the_oldest_failure_leaves_the_window(clock: Clock) -> None:
    throttle = failing(clock, 10, every_s=0.0)
    clock.now_s += 59.5
    assert throttle.retry_after_s("10.0.0.1") == pytest.approx(0.5)
    clock.now_s += 0.5
    assert throttle.retry_after_s("10.0.0.1") is None


def test_failures_spread_wider_than_the_window_never_block(clock: Clock) -> None:
    # One failure every 7 s: never 10 within 60 s.
    throttle = failing(clock, 100, every_s=7.0)
    assert throttle.retry_after_s("10.0.0.1") is None


def test_one_more_failure_after_a_block_blocks_again_at_once(clock: Clock) -> None:
    throttle = failing(clock, 10, every_s=6.0)  # failures at 0, 6, ... 54 s
    clock.now_s = 1000.0 + 61.0  # the first left the window: 9 remain
    assert throttle.retry_after_s("10.0.0.1") is None
    throttle.record_failure("10.0.0.1")
    # Now the oldest of the last 10 is the one at 6 s: blocked until 66 s.
    assert throttle.retry_after_s("10.0.0.1") == pytest.approx(5.0)


def test_memory_is_bounded_by_dropping_the_least_recently_failing(clock: Clock) -> None:
    throttle = AuthThrottle(limit=2, window_s=60.0, clock=clock, max_clients=3)
    for client in ("a", "a", "b", "b", "c", "c"):
        throttle.record_failure(client)
    throttle.record_failure("d")
    assert throttle.retry_after_s("a") is None  # forgotten
    assert throttle.retry_after_s("b") is not None and throttle.retry_after_s("c") is not None


def test_a_throttle_needs_a_positive_limit_and_window() -> None:
    with pytest.raises(ValueError, match="limit >= 1 and window_s > 0"):
        AuthThrottle(limit=0, window_s=60.0)
