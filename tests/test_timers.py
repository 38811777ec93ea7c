"""The I/O thread's deadline heap (runtime/timers.py)."""

from __future__ import annotations

from tofu.timers import Timers


def test_due_timers_come_earliest_first_and_once():
    timers = Timers()
    fired: list[str] = []
    timers.call_at(3.0, lambda: fired.append("c"))
    timers.call_at(1.0, lambda: fired.append("a"))
    timers.call_at(2.0, lambda: fired.append("b"))
    assert timers.timeout(0.5) == 0.5
    for timer in timers.run_due(2.0):
        timer.callback()
    assert fired == ["a", "b"]
    assert timers.run_due(2.0) == []
    assert timers.timeout(2.5) == 0.5
    assert timers.timeout(4.0) == 0.0  # overdue: do not sleep


def test_cancelled_timers_do_not_run_and_do_not_keep_the_loop_awake():
    timers = Timers()
    early = timers.call_at(1.0, lambda: None)
    late = timers.call_at(5.0, lambda: None)
    early.cancel()
    assert timers.timeout(0.0) == 5.0  # the cancelled one is dropped, not waited for
    late.cancel()
    assert timers.timeout(0.0) is None and timers.heap == []
    assert timers.run_due(10.0) == []


def test_ties_run_in_the_order_they_were_armed():
    timers = Timers()
    first = timers.call_at(1.0, lambda: None)
    second = timers.call_at(1.0, lambda: None)
    assert timers.run_due(1.0) == [first, second]


def test_cancelled_timers_do_not_pile_up():
    timers = Timers()
    keep = timers.call_at(1e9, lambda: None)
    for i in range(10_000):
        timers.call_at(1e6 + i, lambda: None).cancel()  # e.g. handshakes completed in time
    assert len(timers.heap) < 200
    assert timers.run_due(1e9) == [keep]
    assert timers.heap == []


def test_a_cancelled_timer_lets_go_of_its_callback():
    timers = Timers()
    timer = timers.call_at(1.0, lambda: None)
    callback = timer.callback
    timer.cancel()
    assert timer.callback is not callback
