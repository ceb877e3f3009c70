"""Checking a live change: the configuration's code and messages, all or none, safety only stricter.

Against a real graph file (the neurofeedback example): every problem is a
ControlError with the HTTP status the API answers and one line naming the
fix; a type or range error reads exactly as the configuration's; nothing of
a request is applied when any part of it fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from rtneuro.config import load_graph
from rtneuro.control.live import ControlError, live_schema, loosens, parse_changes, validate_changes
from rtneuro.errors import ConfigError
from rtneuro.nodes import build_params, node_class

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def graph():
    return load_graph(ROOT / "configs" / "neurofeedback.yaml")


@pytest.fixture
def current(graph):
    return {nid: dict(spec.raw_params or {}) for nid, spec in graph.nodes.items()}


def _refused(graph, current, changes: dict, status: int) -> str:
    before = {k: dict(v) for k, v in current.items()}
    with pytest.raises(ControlError) as info:
        validate_changes(graph, current, parse_changes(changes))
    assert info.value.status == status, str(info.value)
    assert current == before  # nothing applied
    line = str(info.value)
    assert "\n" not in line
    return line


def test_a_valid_change_gives_the_new_parameters(graph, current):
    (c,) = validate_changes(graph, current, parse_changes({"ctl.threshold": 1.0, "ctl.hysteresis": 0.5}))
    assert c.node == "ctl" and c.params.threshold == 1.0 and c.params.hysteresis == 0.5
    assert c.raw["min_hold_s"] == current["ctl"]["min_hold_s"] and c.changed == {"threshold": 1.0, "hysteresis": 0.5}
    # the {"node": {"param": value}} form means the same
    (d,) = validate_changes(graph, current, parse_changes({"ctl": {"threshold": 1.0, "hysteresis": 0.5}}))
    assert d.params == c.params


def test_unknown_nodes_and_parameters_are_404_with_a_suggestion(graph, current):
    assert "no node 'ctll' in graph 'neurofeedback' (did you mean 'ctl'?)" in _refused(graph, current, {"ctll.threshold": 1}, 404)
    line = _refused(graph, current, {"ctl.treshold": 1}, 404)
    assert "has no parameter 'treshold' (did you mean 'threshold'?); live: threshold" in line


def test_a_parameter_that_is_not_live_is_409(graph, current):
    line = _refused(graph, current, {"bp.order": 2}, 409)
    assert line == "node 'bp' parameter 'order' cannot change while running; live: l_freq, h_freq (change it in the configuration and restart)"
    assert "live: none" in _refused(graph, current, {"eeg.chunk_size": 8}, 409)


def test_type_and_range_errors_read_like_the_configurations(graph, current):
    cls = node_class("threshold")
    for value, words in (("high", "must be a number"), (-1.0, "must be >= 0"), (True, "must be a number")):
        line = _refused(graph, current, {"ctl.hysteresis": value}, 422)
        with pytest.raises(ConfigError) as cfg:
            build_params(cls.Params, {**current["ctl"], "hysteresis": value}, "node 'ctl' params")
        assert line == str(cfg.value) and words in line
    assert "is not one of ['off', 'hold']" in _refused(graph, current, {"ctl.gate_action": "of"}, 422)


def test_a_nodes_own_checks_apply_to_a_live_change(graph, current):
    # 160 Hz EEG: a band edge at or above Nyquist is refused by the band-pass node's constructor
    line = _refused(graph, current, {"bp.h_freq": 90.0}, 422)
    assert line.startswith("node 'bp' params") and "80" in line


def test_safety_parameters_only_get_stricter(graph, current):
    (c,) = validate_changes(graph, current, parse_changes({"stim.max_amplitude_ma": 2.0}))  # none -> 2 mA: stricter
    current = {**current, "stim": c.raw}
    (c,) = validate_changes(graph, current, parse_changes({"stim.max_amplitude_ma": 1.0}))
    current = {**current, "stim": c.raw}
    line = _refused(graph, current, {"stim.max_amplitude_ma": 1.5}, 422)
    assert line == ("node 'stim' parameter 'max_amplitude_ma' can only be made stricter while running (lower than 1.0); "
                    "a device profile is never loosened live")
    assert "stricter" in _refused(graph, current, {"stim.max_amplitude_ma": None}, 422)  # null is the loosest
    assert "must be > 0" in _refused(graph, current, {"stim.max_amplitude_ma": 0.0}, 422)
    assert "cannot change while running" in _refused(graph, current, {"stim.profile": "other"}, 409)


def test_a_request_is_all_or_none(graph, current):
    line = _refused(graph, current, {"ctl.threshold": 1.0, "stim.max_amplitude_ma": 1.0, "ctl.hysteresis": -2}, 422)
    assert "hysteresis" in line


def test_a_change_the_nodes_it_feeds_would_refuse_is_422(tmp_path):
    doc = {"name": "dec", "nodes": [
        {"id": "src", "type": "synthetic", "params": {"n_channels": 2, "sfreq": 1000.0, "chunk_size": 50, "duration_s": 1.0}},
        {"id": "bp", "type": "bandpass", "inputs": ["src"], "params": {"l_freq": 1.0, "h_freq": 40.0}},
        {"id": "dec", "type": "decimate", "inputs": ["bp"], "params": {"q": 10}},
    ]}
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(doc))
    g = load_graph(path)
    cur = {nid: dict(s.raw_params) for nid, s in g.nodes.items()}
    validate_changes(g, cur, parse_changes({"bp.h_freq": 30.0}))  # below the decimated Nyquist (50 Hz): fine
    with pytest.raises(ControlError) as info:
        validate_changes(g, cur, parse_changes({"bp.h_freq": 200.0}))  # would alias after decimation
    assert info.value.status == 422 and info.value.args[0].startswith("node 'dec' (fed by 'bp') would not accept the change")


@pytest.mark.parametrize("changes, words", [
    ({}, "non-empty object"), ([], "non-empty object"), ("ctl.threshold=1", "non-empty object"),
    ({"threshold": 1}, "must name NODE.PARAM"), ({"x" * 300: 1}, "at most 200 characters"),
    ({f"n{i}.p": 1 for i in range(300)}, "at most 256"),
])
def test_malformed_changes_are_400(changes, words):
    with pytest.raises(ControlError) as info:
        parse_changes(changes)
    assert info.value.status == 400 and words in str(info.value)


def test_loosens():
    assert loosens("lower", 1.0, 1.5) and not loosens("lower", 1.0, 0.5) and not loosens("lower", None, 3.0)
    assert loosens("lower", 1.0, None) and loosens("higher", 2.0, 1.0) and not loosens("higher", 2.0, 3.0)
    assert loosens("true", True, False) and not loosens("true", False, True) and not loosens("false", True, False)
    assert loosens("lower", [1.0, 2.0], [1.0, 2.5]) and not loosens("lower", [1.0, 2.0], [0.5, 2.0])


def test_the_schema_names_each_live_parameter_with_its_type_range_and_value(graph):
    spec = graph.nodes["stim"]
    schema = live_schema(node_class(spec.type), spec.params)
    assert schema["max_amplitude_ma"] == {"type": "float | None", "value": None, "gt": 0,
                                          "doc": schema["max_amplitude_ma"]["doc"], "stricter": "lower"}
    ctl = live_schema(node_class("threshold"), graph.nodes["ctl"].params)
    assert ctl["threshold"]["value"] == 3.5 and ctl["hysteresis"]["ge"] == 0 and ctl["threshold"]["stricter"] is None


_GRAPH = load_graph(ROOT / "configs" / "neurofeedback.yaml")


@settings(max_examples=100, deadline=None)
@given(changes=st.dictionaries(
    st.sampled_from(["ctl.threshold", "ctl.hysteresis", "ctl.min_hold_s", "ctl.gate_action", "bp.l_freq", "bp.h_freq",
                     "stim.max_amplitude_ma", "stim.max_frequency_hz", "ratio.window_s", "nope.x", "ctl.nope"]),
    st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
              st.text(max_size=20), st.lists(st.floats(-100, 100), max_size=3)),
    min_size=1, max_size=4))
def test_any_change_is_checked_or_refused_with_a_status_and_one_line(changes):
    g = _GRAPH
    cur = {nid: dict(s.raw_params or {}) for nid, s in g.nodes.items()}
    try:
        out = validate_changes(g, cur, parse_changes(changes))
    except ControlError as exc:
        assert exc.status in (400, 404, 409, 422) and "\n" not in str(exc)
        return
    for c in out:  # what passed is what the configuration would accept, within the safety direction
        build_params(node_class(g.nodes[c.node].type).Params, c.raw, "x")
        if c.node == "stim":
            assert all(v is None or v > 0 for v in (c.params.max_amplitude_ma, c.params.max_frequency_hz))


def test_the_api_reference_in_docs_is_the_servers_schema():
    from rtneuro.control.server import api_markdown

    assert (ROOT / "docs" / "control-api.md").read_text() == api_markdown() + "\n", \
        "docs/control-api.md is out of date: python -c 'from rtneuro.control.server import api_markdown; print(api_markdown())' > docs/control-api.md"


def test_the_control_address_on_the_command_line_overrides_the_configuration():
    from rtneuro.cli import _control_address

    assert _control_address("0.0.0.0:8765") == {"control.port": 8765, "control.host": "0.0.0.0", "control.enabled": True}
    assert _control_address("8765") == {"control.port": 8765, "control.enabled": True}
    assert _control_address("[::1]:9000") == {"control.port": 9000, "control.host": "::1", "control.enabled": True}
    assert _control_address("off") == {"control.enabled": False}
    with pytest.raises(ConfigError, match="give HOST:PORT"):
        _control_address("localhost")
    g = load_graph(ROOT / "configs" / "neurofeedback.yaml", overrides=_control_address("127.0.0.2:9100"))
    assert (g.control.host, g.control.port, g.control.enabled) == ("127.0.0.2", 9100, True)
    # auto: a run as fast as possible (a replay nobody steers) serves no API unless asked to
    auto = load_graph(ROOT / "configs" / "neurofeedback.yaml", overrides={"speed": "max"})
    assert auto.control.enabled == "auto" and not auto.control.serves("max") and auto.control.serves(8.0)
    assert g.control.serves("max")
    with pytest.raises(ConfigError, match="must be <= 65535"):
        load_graph(ROOT / "configs" / "neurofeedback.yaml", overrides=_control_address("99999"))
