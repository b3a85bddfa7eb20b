"""The in-process sliding window counter (no Redis) at chosen instants."""

from __future__ import annotations

from kit.ratelimit import LocalWindows, parse_limit

T0 = 1_800_000_000.0  # a window start for 60-second limits (divisible by 60)


def test_counts_within_a_window_then_refuses() -> None:
    windows, item = LocalWindows(), parse_limit("3/minute")
    decisions = [windows.hit(item, ("principal", "7"), 1, T0 + i) for i in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert decisions[0].headers()["X-RateLimit-Limit"] == "3"
    # Other identities have their own budget.
    assert windows.hit(item, ("principal", "8"), 1, T0 + 5).allowed


def test_previous_window_weighs_by_its_overlap() -> None:
    windows, item = LocalWindows(), parse_limit("10/minute")
    for i in range(10):
        assert windows.hit(item, ("address", "a"), 1, T0 + i).allowed
    # Half-way through the next window, the previous one weighs 10 * 0.5 = 5.
    decision = windows.hit(item, ("address", "a"), 1, T0 + 90)
    assert decision.allowed and decision.remaining == 4
    for _ in range(4):
        assert windows.hit(item, ("address", "a"), 1, T0 + 90).allowed
    assert not windows.hit(item, ("address", "a"), 1, T0 + 90).allowed
    assert not windows.peek(item, ("address", "a"), T0 + 90).allowed
    # Two windows later nothing is left.
    assert windows.peek(item, ("address", "a"), T0 + 180).remaining == 10


def test_reset_time_and_clear() -> None:
    windows, item = LocalWindows(), parse_limit("2/minute")
    first = windows.hit(item, ("k",), 1, T0 + 10)
    assert T0 + 10 < first.reset_at <= T0 + 70
    assert windows.peek(item, ("k",), T0 + 11).reset_at > T0 + 11
    windows.hit(item, ("k",), 1, T0 + 11)
    assert not windows.hit(item, ("k",), 1, T0 + 12).allowed
    windows.clear(item, ("k",))
    assert windows.hit(item, ("k",), 1, T0 + 13).allowed
    assert not windows.hit(item, ("k",), 5, T0 + 14).allowed  # a cost above the limit


def test_sweep_drops_old_windows_only() -> None:
    windows, item = LocalWindows(), parse_limit("5/minute")
    windows.hit(item, ("old",), 1, T0)
    windows.hit(item, ("recent",), 1, T0 + 130)  # window 2, the previous one at 200
    windows.hit(item, ("now",), 1, T0 + 200)  # sweeps: window 0 is older than 3 - 1
    keys = {key for key, _, _ in windows._counts}
    assert not any("old" in k for k in keys)
    assert any("recent" in k for k in keys) and any("now" in k for k in keys)
