"""The decoder node: a trained model applied to every window of a live signal."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..decoders.pipeline import DecoderPipeline, PipelineSpec
from ..errors import ConfigError
from ..messages import EVENT_DTYPE, Chunk, StreamMeta, event_label
from .base import Node, NodeContext, build_params, frames_chunk, param, regular_rate

__all__ = ["Decoder", "DecoderParams", "AdaptParams"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AdaptParams:
    """The ``adapt`` block of a decoder: supervised LDA mean adaptation."""

    rate: float = param(0.05, gt=0, lt=1, doc="weight of one labelled window in its class mean")
    max_shift: float = param(1.0, gt=0, doc="largest Mahalanobis distance a class mean may move from calibration")


@dataclass(frozen=True, slots=True, kw_only=True)
class DecoderParams:
    """Parameters of :class:`Decoder`."""

    model: str = param(doc="model file written by 'rtneuro train' (relative to the config's folder)")
    train: dict[str, Any] = param({}, doc="how 'rtneuro train' builds the model (features, classifier, bands, labels, ...)")
    threshold: float = param(0.0, ge=0, le=1, doc="class events: emit when the top probability reaches this")
    min_frames: int = param(1, ge=1, doc="class events: frames the same class must lead before an event")
    adapt: dict[str, Any] | None = param(None, doc="adapt LDA class means from labelled events on the second input: {rate, max_shift}")
    adapting: bool = param(True, doc="with adapt: labelled windows move the class means (false: pause, keeping what was learnt)")

    def __post_init__(self) -> None:
        PipelineSpec.from_json(self.train)  # refuse a bad train: block when the graph is built


class Decoder(Node):
    """Decode every window of a signal with a model from ``rtneuro train``.

    The model fixes the channels (picked by name from the input, in the
    model's order), the sampling rate, the filter bank, the window and step,
    the features and the classifier; a stream that differs is refused when
    the graph is built. Windows are cut, filtered and decoded exactly as in
    training and as :meth:`DecoderPipeline.decode` does offline, so online
    and offline predictions are identical for the same samples.

    Inputs: the signal, and optionally an event stream whose labels (the
    model's ``train.labels``) tell which class a window belongs to; with
    ``adapt`` set, each labelled window then moves its class mean (adaptive
    LDA, bounded).

    Outputs
    -------
    ``<id>``
        One row per window: ``p:<class>`` for each class, then ``class``
        (index of the predicted class, -1 when the window is not finite).
    ``<id>.events``
        Class events for an application: the class label, when the top
        probability reaches ``threshold`` for ``min_frames`` windows and the
        class differs from the last event's.
    ``<id>.adapt``
        With ``adapt``: per window, updates so far, updates clipped by the
        bound, the bias (first intercept) and each class mean's shift.

    With the events input, the report holds ``labelled_windows`` (windows
    wholly inside a trial's ``[tmin, tmax]``) and ``accuracy``, the share of
    them decoded as the trial's class (adaptation included, when on).

    Live parameters: ``threshold`` and ``min_frames`` (class events; the
    class leading and the last event's class stay), ``adapting`` (pause or
    resume adaptation: the adapted means stay and keep decoding) and
    ``adapt`` (a new ``rate`` and ``max_shift``; the means stay, pulled
    back at once onto a tighter bound; adaptation itself cannot be added
    or removed while running, as it has its own output). The model is
    fixed while running.
    """

    Params = DecoderParams
    live = ("threshold", "min_frames", "adapting", "adapt")
    input_kinds = ("sig", "evt")
    max_inputs = 2

    def __init__(self, params: DecoderParams, inputs: Sequence[StreamMeta], ctx: NodeContext) -> None:
        super().__init__(params, inputs, ctx)
        src = inputs[0]
        fs = regular_rate(src, "decoding")
        path = ctx.resolve(params.model)
        if not path.is_file():
            raise ConfigError(f"model file {str(path)!r} not found; train it first: rtneuro train <config> --data <recording>")
        self.pipe = DecoderPipeline.load(path)
        self.picks = self.pipe.check_inputs(src.ch_names, fs, f"stream '{src.name}'")
        self.fs = fs
        self.classes = self.pipe.classes
        self.labels = dict(self.pipe.spec.labels)
        self.adapt_params: AdaptParams | None = None
        if params.adapt is not None:
            self.adapt_params = build_params(AdaptParams, params.adapt, f"node '{ctx.node_id}' adapt")
            if self.pipe.lda_state is None or self.pipe.spec.features == "covariance":
                raise ConfigError("adapt needs a model trained with classifier: lda; retrain it")
            if len(inputs) < 2:
                raise ConfigError("adapt needs the labelled events as second input, e.g. inputs: [eeg, eeg.events]")
        names = tuple(f"p:{c}" for c in self.classes) + ("class",)
        desc = {"window": self.pipe.window, "step": self.pipe.step, "classes": list(self.classes),
                "model": str(path), "features": self.pipe.spec.features, "classifier": self.pipe.spec.classifier,
                "train_hash": self.pipe.info.get("train_hash", "")}
        self.outputs = {
            "": StreamMeta(name=ctx.stream_name(), kind="feat", sfreq=fs / self.pipe.step, ch_names=names,
                           ch_types=("misc",) * len(names), units=("1",) * len(names), dtype="<f8",
                           source=f"decoder {self.pipe.spec.features}+{self.pipe.spec.classifier} of {src.name}",
                           desc=desc),
            "events": StreamMeta(name=ctx.stream_name("events"), kind="evt", sfreq=0.0, dtype="event",
                                 source=f"class events of {ctx.stream_name()}",
                                 event_id={c: i + 1 for i, c in enumerate(self.classes)}),
        }
        if self.adapt_params is not None:
            an = ("updates", "clipped", "bias") + tuple(f"shift:{c}" for c in self.classes)
            self.outputs["adapt"] = StreamMeta(
                name=ctx.stream_name("adapt"), kind="feat", sfreq=fs / self.pipe.step, ch_names=an,
                ch_types=("misc",) * len(an), units=("1",) * len(an), dtype="<f8",
                source=f"adaptive LDA of {ctx.stream_name()}")
        self.reset()

    def reset(self) -> None:
        self.runner = self.pipe.runner()
        self._origin: int | None = None
        self._frames = 0
        self._lead = -1
        self._lead_n = 0
        self._last_event = -1
        self.n_events = 0
        self.nonfinite = 0
        self._trials: list[tuple[int, int]] = []  # (onset sample, class index), in order
        self._ref: tuple[int, float] | None = None  # (first, t0) of the latest signal chunk
        self.unplaced = 0
        #: windows that lie in a labelled trial (the events input), and those decoded as its class
        self.labelled = self.correct = 0
        self.adaptive = None
        if self.adapt_params is not None:
            from ..decoders.adaptive import AdaptiveLda

            st = self.pipe.lda_state
            assert st is not None
            self.adaptive = AdaptiveLda(self.pipe.decoder, st["means"], st["covariance"], st["priors"],
                                        self.adapt_params.rate, self.adapt_params.max_shift)

    def update(self, params: DecoderParams) -> None:
        """Take live parameters; the runner, the event state and the adapted means stay."""
        self.params = params
        if self.adaptive is not None and params.adapt is not None:
            ap = build_params(AdaptParams, params.adapt, f"node '{self.ctx.node_id}' adapt")
            self.adapt_params = ap
            self.adaptive.retune(ap.rate, ap.max_shift)

    def warmup(self) -> None:
        self.pipe.warmup()
        self.pipe.decoder.warmup()

    def report(self) -> dict:
        out = {"frames": self._frames, "class_events": self.n_events, "nonfinite_windows": self.nonfinite,
               "replaced_nonfinite": self.runner.cut.n_replaced, "labelled_windows": self.labelled,
               "accuracy": self.correct / self.labelled if self.labelled else None}
        if self.adaptive is not None:
            out.update(adapt_updates=self.adaptive.updates, adapt_clipped=self.adaptive.clipped,
                       adapt_rejected=self.adaptive.rejected, labels_unplaced=self.unplaced)
        return out

    def _labels(self, chunk: Chunk) -> None:
        for ev in chunk.data:
            lab = event_label(ev["label"])
            if lab not in self.labels:
                continue
            idx = int(ev["index"])
            if idx < 0:  # a marker stream (LSL): place it by time on the signal's latest chunk
                if self._ref is None:
                    self.unplaced += 1
                    continue
                first, t0 = self._ref
                idx = first + int(round((float(ev["time"]) - t0) * self.fs))
            self._trials.append((idx, self.classes.index(self.labels[lab])))

    def _label_of(self, first: int, end: int) -> int:
        """Class of the window of input samples [first, end), or -1."""
        s = self.pipe.spec
        lo_off = int(round(s.tmin * self.fs))
        hi_off = int(round(s.tmax * self.fs))
        for onset, k in reversed(self._trials):
            if onset + lo_off <= first and end <= onset + hi_off:
                return k
            if onset + hi_off < first - 10 * self.pipe.window:
                break
        return -1

    def process(self, chunk: Chunk, port: int = 0) -> list | None:
        if port == 1:
            self._labels(chunk)
            return None
        x = chunk.data
        if x.shape[0] == 0:
            return None
        if self._origin is None:
            self._origin = chunk.first
        self._ref = (chunk.first, chunk.t0)
        xs = np.ascontiguousarray(x[:, self.picks], dtype=np.float64)
        fr = self.runner.push(xs, decode=self.adaptive is None)  # adaptive LDA decodes frame by frame below
        n = len(fr.ends)
        if n == 0:
            return None
        K = len(self.classes)
        if self.adaptive is not None:
            adapt_rows = np.empty((n, 3 + K))
            for i in range(n):
                fr.index[i] = self.adaptive.infer(fr.features[i], fr.scores[i], fr.proba[i])
                end = self._origin + int(fr.ends[i])
                k = self._label_of(end - self.pipe.window, end) if self.params.adapting else -1
                if k >= 0:
                    self.adaptive.update(fr.features[i], k)
                a = self.adaptive
                adapt_rows[i, :3] = (a.updates, a.clipped, a.intercept[0])
                adapt_rows[i, 3:] = a.shift()
        if self._trials:  # accuracy against the recording's labels: windows wholly inside a trial's [tmin, tmax]
            for i in range(n):
                end = self._origin + int(fr.ends[i])
                k = self._label_of(end - self.pipe.window, end)
                if k >= 0:
                    self.labelled += 1
                    self.correct += int(fr.index[i] == k)
        rows = np.empty((n, K + 1))
        rows[:, :K] = fr.proba
        rows[:, K] = fr.index
        self.nonfinite += int(np.count_nonzero(fr.index < 0))
        first_frame = self._frames
        self._frames += n
        main = frames_chunk(chunk, rows, fr.ends, origin=self._origin, first_frame=first_frame, window=self.pipe.window,
                            step=self.pipe.step, fs=self.fs, of=self.inputs[0].name)
        out: list = [("", main)]
        events = self._class_events(fr, main.t0)
        if events.size:
            out.append(("events", Chunk(events, first_frame, main.t0, 0.0, chunk.trace)))
        if self.adaptive is not None:
            out.append(("adapt", Chunk(adapt_rows, first_frame, main.t0, main.sfreq, chunk.trace)))
        return out

    def _class_events(self, fr: Any, t_first: float) -> np.ndarray:
        p = self.params
        rows = []
        assert self._origin is not None
        for i in range(len(fr.ends)):
            k = int(fr.index[i])
            if k < 0 or fr.proba[i, k] < p.threshold:
                self._lead, self._lead_n = -1, 0
                continue
            if k == self._lead:
                self._lead_n += 1
            else:
                self._lead, self._lead_n = k, 1
            if self._lead_n >= p.min_frames and k != self._last_event:
                self._last_event = k
                idx = self._origin + int(fr.ends[i]) - 1
                t = t_first + (int(fr.ends[i]) - int(fr.ends[0])) / self.fs
                rows.append((idx, t, k + 1, -1, 0.0, float(fr.proba[i, k]),
                             self.classes[k].encode("utf-8")[:64]))
        self.n_events += len(rows)
        return np.array(rows, dtype=EVENT_DTYPE)
