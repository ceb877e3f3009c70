"""Clocks: the LSL clock, scaled replay time, the virtual clock."""

from __future__ import annotations

import time

import pylsl
import pytest

from rtneuro.runtime.clock import (
    LiveClock,
    ScaledClock,
    VirtualClock,
    lsl_clock,
    make_clock,
    sleep_until,
)


def test_the_fast_clock_is_the_lsl_clock():
    for _ in range(5):
        a = lsl_clock()
        b = pylsl.local_clock()
        c = lsl_clock()
        assert a <= b + 1e-4 and b <= c + 1e-4


def test_sleep_until_wakes_on_time_and_never_early():
    late = []
    for _ in range(20):
        t = lsl_clock() + 0.005
        sleep_until(t)
        late.append(lsl_clock() - t)
    assert min(late) >= 0.0
    assert sorted(late)[10] < 0.05  # a sanity check against oversleeping by whole scheduler periods, not a timing guarantee


def test_scaled_clock_runs_faster_and_maps_stream_time_to_real_time():
    clk = ScaledClock(10.0, origin_stream=0.0, origin_real=lsl_clock())
    t_real = clk.wait_until(0.5)  # 0.5 s of stream time = 0.05 s of real time
    assert t_real == pytest.approx(clk.origin_real + 0.05)
    assert 0.5 <= clk.now() < 0.5 + 10 * 0.5  # it waited; and the reading follows at 10x (0.5 s of scheduling slack)
    assert not clk.live and LiveClock().live


def test_virtual_clock_jumps_and_never_goes_back():
    clk = VirtualClock(3.0)
    t0 = time.monotonic()
    clk.wait_until(1000.0)
    assert time.monotonic() - t0 < 2.0  # a real wait would take 1000 s
    assert clk.now() == 1000.0
    clk.advance(10.0)
    assert clk.now() == 1000.0


def test_make_clock():
    assert isinstance(make_clock("max", 0.0, 1.0), VirtualClock)
    assert make_clock("realtime", 0.0, 1.0).speed == 1.0
    assert make_clock(4.0, 0.0, 1.0).speed == 4.0
    with pytest.raises(ValueError):
        ScaledClock(0.0)


def test_the_cpu_latency_request_is_held_and_released():
    import os
    import struct

    from rtneuro.runtime.supervisor import CpuLatencyRequest

    def current():
        fd = os.open(CpuLatencyRequest.PATH, os.O_RDONLY)
        try:
            return struct.unpack("i", os.read(fd, 4))[0]
        finally:
            os.close(fd)

    try:
        before = current()
    except OSError:
        pytest.skip("no readable /dev/cpu_dma_latency here")
    with CpuLatencyRequest(0) as req:
        if req.error:
            pytest.skip(req.error)
        assert current() == 0
    assert current() == before


def test_a_cpu_latency_request_that_cannot_be_held_is_a_warning(monkeypatch):
    from rtneuro.runtime.supervisor import CpuLatencyRequest

    monkeypatch.setattr(CpuLatencyRequest, "PATH", "/nonexistent/cpu_dma_latency")
    with CpuLatencyRequest(0) as req:
        assert req.error.startswith("cannot hold cpu_dma_latency_us=0") and "default CPU idle states" in req.error
