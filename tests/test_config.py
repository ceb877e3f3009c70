"""Graph validation: every problem found before anything opens, named with file, line, node and fix."""

from __future__ import annotations

import pytest

from rtneuro.config import load_graph, parse_speed
from rtneuro.errors import ConfigError

from conftest import ROOT, synthetic_chain


def _errors(path) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_graph(path)
    lines = str(err.value).splitlines()
    assert all(line.startswith(str(path)) for line in lines), lines
    return lines


def test_the_demo_graph_is_valid_and_placed_in_four_processes():
    g = load_graph(ROOT / "configs" / "demo.yaml")
    assert list(g.processes) == ["acquire", "process", "control", "stimulate"]
    assert [p.service for p in g.processes.values()] == ["acquire", "process", "control", "stimulate"]
    eeg = g.streams["eeg"]
    assert eeg.n_channels == 64 and eeg.sfreq == 160.0 and "Oz" in eeg.ch_names and eeg.units[0] == "uV"
    assert g.streams["alpha"].ch_names == ("alpha",) and g.streams["alpha"].sfreq == pytest.approx(10.0)
    assert g.streams["eeg.events"].kind == "evt"
    assert g.remote_consumers("alpha") == ["control"]
    assert g.remote_consumers("ctl") == ["stimulate"]


def test_every_shipped_replay_config_validates():
    """Configs reading live LSL streams resolve them while validating: tests/test_demo.py runs those against a player."""
    paths = [p for p in sorted((ROOT / "configs").glob("*.yaml")) if "lsl_inlet" not in p.read_text()]
    assert len(paths) >= 2
    for path in paths:
        if "type: decoder" in path.read_text():  # a decoder needs its model: calibrate first, as the config says
            from rtneuro.decoders.train import train_from_config

            train_from_config(path, [ROOT / "replay_data" / "S003R03.edf"])
        load_graph(path)


def test_default_placement_follows_the_node_category(write_graph):
    graph = synthetic_chain()
    for n in graph["nodes"]:
        n.pop("process")
    graph["nodes"].append({"id": "log", "type": "console", "inputs": ["bpow"]})
    g = load_graph(write_graph(graph))
    assert {n: s.process for n, s in g.nodes.items()} == {
        "src": "acquire", "bp": "process", "bpow": "process", "ctl": "control", "stim": "stimulate", "log": "process"}


def test_a_typo_in_a_parameter_gets_a_suggestion_with_file_and_line(write_graph):
    graph = synthetic_chain()
    graph["nodes"][1]["params"] = {"lfreq": 1.0, "h_freq": 40.0}
    path = write_graph(graph)
    (line,) = _errors(path)
    assert "node 'bp' (bandpass)" in line and "unknown parameter 'lfreq'" in line and "did you mean 'l_freq'" in line
    assert line.startswith(f"{path}:")
    assert int(line.split(":")[1]) > 1  # a real line number


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda g: g["nodes"][1].update(type="bandpas"), "unknown node type 'bandpas' (did you mean 'bandpass'?)"),
        (lambda g: g["nodes"][1].update(inptus=["src"]), "unknown key 'inptus' (did you mean 'inputs'?)"),
        (lambda g: g.update(nodez=[]), "unknown section 'nodez' (did you mean 'nodes'?)"),
        (lambda g: g["nodes"][1]["params"].update(order="four"), "params.order='four' must be an integer"),
        (lambda g: g["nodes"][1]["params"].update(order=40), "params.order=40 must be <= 10"),
        (lambda g: g["nodes"][1]["params"].update(l_freq=50.0), "l_freq=50.0 must be below h_freq=40.0"),
        (lambda g: g["nodes"][1]["params"].update(h_freq=200.0), "h_freq=200.0 Hz must be below the Nyquist frequency 125 Hz"),
        (lambda g: g["nodes"][3]["params"].pop("threshold"), "missing required parameter 'threshold'"),
        (lambda g: g["nodes"][3]["params"].update(direction="up"), "params.direction='up' is not one of ['above', 'below']"),
        (lambda g: g["nodes"][2].update(inputs=["bq"]), "input 'bq' is not produced by any node (did you mean 'bp'?)"),
        (lambda g: g["nodes"][3].update(inputs=["bp"]), "input 'bp' is a 'sig' stream but this input takes 'feat'"),
        (lambda g: g["nodes"][1].update(inputs=["src", "src"]), "takes 1 input(s), got 2"),
        (lambda g: g["nodes"][2]["params"].update(picks=["Oz"]), "picks ['Oz'] are not channels of stream 'bp'"),
        (lambda g: g["nodes"].append(dict(g["nodes"][1])), "duplicate id (first defined on line"),
        (lambda g: g["nodes"][1].update(id="b.p"), "'id' must be a name"),
        (lambda g: g["nodes"][4]["params"].update(profile="nosuch"), "device profile 'nosuch' not found"),
        (lambda g: g["nodes"][4]["params"].update(driver="serial9"), "unknown driver 'serial9'"),
        (lambda g: g["runtime"].update(speed="fast"), "speed='fast': use 'realtime', 'max' or a factor"),
        (lambda g: g.update(transport={"policy": "newest"}), "transport.policy='newest' is not one of ['latest', 'lossless']"),
        (lambda g: g.update(processes={"spare": {}}), "process 'spare' holds no node"),
        (lambda g: g.update(processes={"stimulate": {"restart": "sometimes"}}), "restart='sometimes' is not one of"),
    ],
)
def test_invalid_graphs_are_refused_with_a_one_line_reason(write_graph, mutate, expected):
    graph = synthetic_chain()
    mutate(graph)
    lines = _errors(write_graph(graph))
    assert any(expected in line for line in lines), lines


def test_cycles_are_named(write_graph):
    graph = synthetic_chain()
    graph["nodes"][1]["inputs"] = ["fb"]
    graph["nodes"].append({"id": "fb", "type": "fault", "inputs": ["bp"], "params": {"after_chunks": 1000}})
    (line,) = _errors(write_graph(graph))
    assert "the graph has a cycle" in line and "bp -> fb -> bp" in line.replace("fb -> bp -> fb", "bp -> fb -> bp")


def test_all_problems_are_reported_at_once(write_graph):
    graph = synthetic_chain()
    graph["nodes"][1]["params"]["order"] = 0
    graph["nodes"][3]["params"]["hysteresis"] = -1.0
    graph["nodes"][4]["type"] = "stimulater"
    lines = _errors(write_graph(graph))
    assert len(lines) == 3, lines


def test_yaml_syntax_errors_give_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("nodes:\n  - id: a\n    type: [synthetic\n")
    (line,) = _errors(path)
    assert "YAML syntax error" in line


def test_duplicate_yaml_keys_are_refused(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("nodes:\n  - id: a\n    type: synthetic\n    type: bandpass\n")
    (line,) = _errors(path)
    assert "line 4: key 'type' appears twice" in line


def test_missing_files_and_non_recordings_are_refused(write_graph, tmp_path):
    graph = {"nodes": [{"id": "eeg", "type": "file_replay", "params": {"path": "nowhere.edf"}}]}
    (line,) = _errors(write_graph(graph))
    assert "recording not found" in line and "nowhere.edf" in line
    fake = tmp_path / "notes.edf"
    fake.write_text("this is not an EDF file\n" * 10)
    graph["nodes"][0]["params"]["path"] = str(fake)
    (line,) = _errors(write_graph(graph))
    assert "is not a recording MNE can read" in line and "supported:" in line


def test_a_missing_config_file_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_graph(tmp_path / "none.yaml")


def test_command_line_overrides_and_max_speed_forces_lossless(write_graph):
    g = load_graph(write_graph(synthetic_chain(speed="realtime")), overrides={"speed": "max", "duration_s": 3})
    assert g.runtime.speed == "max" and g.runtime.duration_s == 3.0
    assert g.transport.policy == "lossless"


@pytest.mark.parametrize("value, expected", [("realtime", "realtime"), ("max", "max"), (8, 8.0), ("8x", 8.0), ("1", "realtime")])
def test_speed_parsing(value, expected):
    assert parse_speed(value) == expected


def test_plan_round_trips_through_json(write_graph):
    import json

    g = load_graph(write_graph(synthetic_chain()))
    plan = json.loads(json.dumps(g.to_plan()))
    assert [n["id"] for n in plan["nodes"]] == list(g.nodes)
    assert plan["streams"]["bpow"]["ch_names"] == ["alpha"]
