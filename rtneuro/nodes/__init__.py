"""Node types, by the name used in configuration files.

The registry is an explicit table of ``"type": "module:Class"`` entries,
imported lazily so that ``import rtneuro`` stays light (MNE is only loaded
by a process that replays a file).
"""

from __future__ import annotations

import importlib

from ..errors import ConfigError, did_you_mean
from .base import Node, NodeContext, Source, build_params, param

__all__ = ["NODE_TYPES", "node_class", "Node", "Source", "NodeContext", "build_params", "param"]

NODE_TYPES: dict[str, str] = {
    # sources
    "synthetic": "rtneuro.nodes.sources:Synthetic",
    "file_replay": "rtneuro.nodes.sources:FileReplay",
    "session_replay": "rtneuro.recording.replay:SessionReplay",
    "lsl_inlet": "rtneuro.nodes.lsl:LslInlet",
    "xdf_replay": "rtneuro.nodes.xdf:XdfReplay",
    "synthetic_spikes": "rtneuro.nodes.spikes:SyntheticSpikes",
    "sim_brain": "rtneuro.nodes.plant:SimBrain",
    "cursor_task": "rtneuro.nodes.bmi:CursorTask",
    "kalman": "rtneuro.nodes.bmi:Kalman",
    "poisson_decoder": "rtneuro.nodes.bmi:PoissonDirection",
    # signal processing
    "spike_detect": "rtneuro.nodes.spikes:SpikeDetect",
    "phase": "rtneuro.nodes.phase:Phase",
    "bandpass": "rtneuro.nodes.filters:Bandpass",
    "notch": "rtneuro.nodes.filters:Notch",
    "fir": "rtneuro.nodes.filters:Fir",
    "reref": "rtneuro.nodes.filters:Reref",
    "decimate": "rtneuro.nodes.filters:Decimate",
    "bandpower": "rtneuro.nodes.spectral:Bandpower",
    "envelope": "rtneuro.nodes.spectral:Envelope",
    "bursts": "rtneuro.nodes.bursts:Bursts",
    "coherence": "rtneuro.nodes.connectivity:Coherence",
    "information": "rtneuro.nodes.information:Information",
    "spike_stats": "rtneuro.nodes.spikestats:SpikeStats",
    "quality": "rtneuro.nodes.quality:Quality",
    "neuron_model": "rtneuro.nodes.models:NeuronModel",
    "decoder": "rtneuro.nodes.decoders:Decoder",
    # controllers
    "threshold": "rtneuro.nodes.controllers:Threshold",
    "pulse": "rtneuro.nodes.controllers:Pulse",
    "adbs": "rtneuro.nodes.adaptive:Adbs",
    "pid": "rtneuro.nodes.adaptive:Pid",
    "lif_trigger": "rtneuro.nodes.adaptive:LifTrigger",
    "rate_adaptive": "rtneuro.nodes.adaptive:RateAdaptive",
    # sinks
    "console": "rtneuro.nodes.sinks:Console",
    "jsonl": "rtneuro.nodes.sinks:JsonLines",
    "recorder": "rtneuro.nodes.recorder:Recorder",
    "session_check": "rtneuro.recording.replay:SessionCheck",
    "lsl_outlet": "rtneuro.nodes.lsl:LslOutlet",
    "segment_summary": "rtneuro.nodes.sinks:SegmentSummary",
    "stimulator": "rtneuro.nodes.stimulator:Stimulator",
    "session_stimulator": "rtneuro.recording.replay:SessionStimulator",
    # supervision drills
    "fault": "rtneuro.nodes.sinks:Fault",
}


def node_class(type_name: str) -> type[Node]:
    """The class registered under ``type_name``."""
    target = NODE_TYPES.get(type_name)
    if target is None:
        raise ConfigError(f"unknown node type {type_name!r}{did_you_mean(type_name, NODE_TYPES)}; known types: {', '.join(sorted(NODE_TYPES))}")
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
