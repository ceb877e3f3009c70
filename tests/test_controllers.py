"""Controllers that are not covered elsewhere: one pulse per trigger event."""

from __future__ import annotations

import numpy as np
import pytest

from rtneuro.errors import ConfigError
from rtneuro.messages import CMD_HOLD, CMD_PULSE, Chunk, StreamMeta, make_events
from rtneuro.nodes import NodeContext, build_params
from rtneuro.nodes.controllers import Pulse, PulseParams

FEAT = StreamMeta(name="ph", kind="feat", sfreq=160.0, ch_names=("phase", "amplitude"), units=("rad", "uV"))
EVT = StreamMeta(name="ph.events", kind="evt", sfreq=0.0, dtype="event")


def _pulse(**params):
    return Pulse(build_params(PulseParams, params, "node 'ctl' params"), [FEAT, EVT], NodeContext(node_id="ctl"))


def test_each_matching_event_is_one_pulse_with_its_cause_and_each_frame_chunk_a_heartbeat():
    ctl = _pulse(amplitude_ma=2.0, pulse_width_us=90.0, channel=1)
    hb = ctl.process(Chunk(np.zeros((16, 2)), 32, 0.2, 160.0, []), port=0)
    assert hb.data["kind"].tolist() == [CMD_HOLD] and hb.extra["cause"]["frames"] == [47, 47]
    ev = make_events([(40, 0.25, 1, -1, 0.0, 12.0, "phase_trigger"), (44, 0.275, 2, -1, 0.0, 3.0, "true_phase"),
                      (47, 0.29375, 1, -1, 0.0, 9.0, "phase_trigger")])
    cmd = ctl.process(Chunk(ev, 40, 0.25, 0.0, []), port=1)
    assert cmd.data["kind"].tolist() == [CMD_PULSE, CMD_PULSE]
    assert cmd.data["amplitude_ma"].tolist() == [2.0, 2.0] and cmd.data["channel"].tolist() == [1, 1]
    assert cmd.extra["cause"]["events"] == [40, 47] and cmd.extra["cause"]["values"] == [12.0, 9.0]
    assert ctl.report() == {"pulses": 2, "heartbeats": 1, "ignored_events": 1}
    assert ctl.process(Chunk(ev[1:2], 44, 0.275, 0.0, []), port=1) is None


def test_pulse_needs_labels():
    with pytest.raises(ConfigError, match="labels must name at least one event label"):
        _pulse(labels=[])
