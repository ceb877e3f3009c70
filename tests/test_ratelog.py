"""Rate-limited logging: a flood of one reason writes a bounded number of lines."""

import logging

from rtneuro.ratelog import MAX_REASONS, RateLog


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_first_in_full_then_one_line_per_interval_with_the_count(caplog):
    clock = FakeClock()
    rl = RateLog(logging.getLogger("rtneuro.test.ratelog"), interval_s=10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="rtneuro.test.ratelog"):
        for i in range(1000):
            clock.t = i * 0.05  # 50 s of a flood, 20 per second
            rl.warning("header", "dropped a malformed message %d", i)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("dropped a malformed message 0")
    assert 5 <= len(lines) <= 6  # one per 10 s, not 1000
    assert "more 'header'" in lines[1]
    assert rl.totals == {"header": 1000}
    rl.flush()
    assert rl.lines == len(caplog.records)


def test_distinct_reasons_are_bounded():
    rl = RateLog(logging.getLogger("rtneuro.test.ratelog"), clock=FakeClock())
    for i in range(10 * MAX_REASONS):
        rl.warning(f"r{i}", "x")
    assert len(rl.totals) == MAX_REASONS + 1
    assert rl.totals["other"] == 9 * MAX_REASONS
    assert rl.total == 10 * MAX_REASONS
    assert rl.lines == MAX_REASONS + 1
