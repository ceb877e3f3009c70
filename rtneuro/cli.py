"""The ``rtneuro`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import sys
import time
import typing

from .errors import ConfigError, RtneuroError, did_you_mean

EXIT_CONFIG = 2


def given_path(path: str, what: str) -> str:
    """``path`` as typed on the command line, refused at once when it does not exist.

    A relative path typed on the command line is resolved against the current
    folder (paths inside a configuration file are resolved against that
    file's folder); the error says which.
    """
    from pathlib import Path

    p = Path(path).expanduser()
    if not p.exists():
        where = "" if p.is_absolute() else f" (a path typed on the command line is resolved against the current folder, {Path.cwd()})"
        raise ConfigError(f"{what} not found: {path}{where}; check the path")
    return path


def _cmd_validate(args: argparse.Namespace) -> int:
    from .config import load_graph

    graph = load_graph(args.config, wait_for_streams=False)
    if graph.waiting:  # one line: what waits for a live stream, and what could not be checked without it
        waits = "; ".join(graph.waiting.values())
        unchecked = f"; not checked: {', '.join(graph.unchecked)}" if graph.unchecked else ""
        line = f"live stream(s) not running, waited for by 'rtneuro run': {waits}{unchecked}"
        if args.strict:
            raise ConfigError(f"{args.config}: {line} (--strict: start the outlet(s) and validate again)")
        print(f"warning: {line}", file=sys.stderr)
    checked = "" if not graph.unchecked else f" ({len(graph.unchecked)} not checked without their live stream)"
    print(f"{args.config}: valid graph '{graph.name}' with {len(graph.nodes)} nodes in {len(graph.processes)} processes{checked}")
    for proc in graph.processes.values():
        print(f"  process {proc.name} ({proc.service}, restart {proc.restart} x{proc.max_restarts}): {', '.join(proc.nodes)}")
    for name, meta in graph.streams.items():
        shape = f"{meta.n_channels} ch" if meta.kind in ("sig", "feat") else meta.dtype
        rate = f"{meta.sfreq:g} Hz" if meta.sfreq else "irregular"
        declared = " (declared; its stream was not running)" if meta.desc.get("declared") else ""
        print(f"  stream {meta.kind}.{name}: {shape}, {rate}, from {graph.producer[name]}{declared}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .config import load_graph
    from .runtime.supervisor import Supervisor

    if args.verbose:
        os.environ["RTNEURO_LOG"] = "INFO"
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="[supervisor] %(levelname)s %(message)s")
    overrides = {"speed": args.speed, "duration_s": args.duration}
    if args.control:
        overrides.update(_control_address(args.control))
    if getattr(args, "ui", False):
        overrides["ui.enabled"] = True
        if not args.control:
            overrides["control.enabled"] = True  # pages asked for are served at any speed
    session = None
    if args.record:
        from .recording.session import append_report, recording_graph

        graph, session = recording_graph(args.config, args.record, overrides=overrides)
        print(f"recording to {session}", file=sys.stderr)
    else:
        graph = load_graph(args.config, overrides=overrides)
    sup = Supervisor(graph, report_path=args.report, quiet=args.quiet)
    code = sup.run()
    if session is not None:
        print(append_report(session, sup.report), file=sys.stderr)
    return code


def parse_stream_query(text: str) -> dict[str, str]:
    """``--main`` of ``rtneuro replay``: ``name=Muse,type=EEG`` (keys name, type, source_id), or a bare name."""
    if "=" not in text:
        return {"name": text}
    out: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in ("name", "type", "source_id") or key in out:
            raise ConfigError(f"--main {text!r}: give key=value pairs with keys name, type and source_id, "
                              "e.g. --main name=Muse,type=EEG (or a bare stream name)")
        out[key] = value.strip()
    return out


def data_folder(name: str):
    """The example configurations (``"configs"``) or recordings (``"replay_data"``) rtneuro ships.

    Inside the installed package (a wheel: ``rtneuro/configs``), else the
    source checkout's top-level folder (an editable install).
    """
    from pathlib import Path

    here = Path(__file__).resolve().parent
    for folder in (here / name, here.parent / name):
        if folder.is_dir():
            return folder
    raise RtneuroError(f"the {name} folder is neither in the installed package ({here / name}) nor next to it "
                       f"({here.parent / name}); reinstall rtneuro (pip install rtneuro) or run from its source checkout")


def _control_address(text: str) -> dict:
    """``--control HOST:PORT`` (or ``PORT``, or ``off``) as configuration overrides of the ``control:`` section."""
    if text == "off":
        return {"control.enabled": False}
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"--control {text!r}: give HOST:PORT (127.0.0.1:8765), PORT, or off") from None
    out: dict = {"control.port": number, "control.enabled": True}  # an address asked for is served, at any speed
    if host:
        out["control.host"] = host.strip("[]")
    return out


def _cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .config import load_graph
    from .runtime.supervisor import Supervisor

    configs = data_folder("configs")
    names = sorted(p.stem for p in configs.glob("*.yaml"))
    if args.list:
        for name in names:
            first = (configs / f"{name}.yaml").read_text().splitlines()[0].lstrip("# ").strip()
            print(f"{name:<22} {first}")
        print(f"(in {configs}; copy one to change it: its recordings are in {data_folder('replay_data')})")
        return 0
    if args.name not in names:
        raise ConfigError(f"no example configuration {args.name!r}{did_you_mean(args.name, names)}; "
                          f"they are: {', '.join(names)} (rtneuro demo --list)")
    config = configs / f"{args.name}.yaml"
    report = Path(args.report) if args.report else Path.cwd() / f"{args.name}-report.json"
    logging.basicConfig(level=logging.WARNING, format="[supervisor] %(levelname)s %(message)s")
    print(f"{args.name}: {config}, report to {report}", file=sys.stderr)
    overrides = {"speed": args.speed, "duration_s": args.duration}
    if args.ui:
        overrides.update({"ui.enabled": True, "control.enabled": True})
    graph = load_graph(config, overrides=overrides)
    return Supervisor(graph, report_path=report, quiet=args.quiet).run()


def replay_graph(path: str, name: str | None = None, speed: str | float = "realtime", chunk_size: int | None = None,
                 loop: bool = False, main: dict[str, str] | None = None) -> dict:
    """The graph that plays a recording as LSL outlets: its source, one outlet per stream.

    An XDF file's streams go out under their recorded names, types and (with
    a prefix) source ids, so an inlet that found the device finds its replay;
    ``name`` renames the main one. ``main`` names the main stream of an XDF
    file (the rule of :data:`rtneuro.nodes.xdf.MAIN_RULE` otherwise).
    """
    from pathlib import Path

    from .nodes import NodeContext, build_params, node_class

    file = Path(path).expanduser().resolve()
    xdf = file.suffix.lower() == ".xdf"
    params: dict = {"path": str(file)}
    if chunk_size:
        params["chunk_size"] = chunk_size
    if loop:
        if xdf:
            raise ConfigError("--loop is for MNE-readable recordings, not XDF files")
        params["loop"] = True
    if main is not None:
        if not xdf:
            raise ConfigError("--main picks the main stream of an XDF file; other recordings have one stream")
        params["main"] = main
    stype = "xdf_replay" if xdf else "file_replay"
    cls = node_class(stype)
    src = cls(build_params(cls.Params, params, "replay"), [], NodeContext(node_id="rec", base_dir=file.parent))
    base = name or file.stem
    nodes: list[dict] = [{"id": "rec", "type": stype, "process": "replay", "params": params}]
    for port, meta in src.outputs.items():
        out: dict = {"name": base if not port else f"{base}-{port}", "source_id": f"rtneuro-replay:{base}:{port or 'main'}"}
        if xdf:  # as recorded: name, type, source id
            rec_name, rec_type = str(meta.desc.get("xdf_name", "")), str(meta.desc.get("xdf_type", ""))
            rec_sid = str(meta.desc.get("xdf_source_id", ""))
            out = {"name": (name if name and not port else rec_name) or out["name"],
                   "source_id": f"rtneuro-replay:{rec_sid or rec_name + ':' + rec_type}"}
            if rec_type:
                out["type"] = rec_type
        nodes.append({"id": f"out_{port or 'main'}", "type": "lsl_outlet", "inputs": [meta.name], "process": "replay",
                      "params": out})
    return {"name": f"replay-{base}", "runtime": {"speed": speed, "status_interval_s": 2.0}, "nodes": nodes}


def _cmd_replay(args: argparse.Namespace) -> int:
    import tempfile

    import yaml

    from .config import load_graph, parse_speed
    from .runtime.supervisor import Supervisor

    given_path(args.file, "recording" if args.lsl else "session file")
    if args.check:
        from .recording.replay import replay_check

        if args.lsl:
            raise ConfigError("--check and --lsl do not go together: --check reruns a session, --lsl plays a recording to LSL")
        res = replay_check(args.file, args.config, apply_control=not args.without_control)
        if args.json:
            from pathlib import Path

            Path(args.json).write_text(json.dumps(res, indent=2))
        return 0 if res["differing"] == 0 and res["exit_code"] == 0 else 1
    if args.config:
        raise ConfigError("--config is for --check (rerun a recorded session through a graph)")
    if not args.lsl:
        raise ConfigError("rtneuro replay FILE plays a recording as LSL outlets (add --lsl), or checks a recorded session (add --check)")
    speed = parse_speed(args.speed)
    if speed == "max":
        raise ConfigError("--speed max makes no sense for LSL outlets (nothing would wait for real time); use realtime or a factor")
    main = parse_stream_query(args.main) if args.main else None
    graph = replay_graph(args.file, args.name, speed, args.chunk_size, args.loop, main)
    with tempfile.TemporaryDirectory(prefix="rtn-replay-") as d:
        from pathlib import Path

        cfg = Path(d) / "replay.yaml"
        cfg.write_text(yaml.safe_dump(graph, sort_keys=False))
        g = load_graph(cfg)
        for spec in g.nodes.values():
            if spec.type == "lsl_outlet":
                meta = g.streams[spec.inputs[0]]
                what = f"{meta.n_channels} ch at {meta.sfreq:g} Hz" if meta.kind == "sig" else "markers"
                typ = f" (type '{spec.params.type}')" if spec.params.type else ""
                print(f"LSL outlet '{spec.params.name}'{typ}: {what}{', main' if spec.id == 'out_main' else ''}")
        return Supervisor(g, quiet=args.quiet).run()


def _cmd_export(args: argparse.Namespace) -> int:
    from .recording.export import export_session

    given_path(args.session, "session file")
    for path in export_session(args.session, args.to, args.out, args.stream):
        print(path)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import json

    from .decoders.train import train_from_config

    for d in args.data:
        given_path(d, "recording")
    result, path = train_from_config(args.config, args.data, args.labels, args.node, args.out)
    print(result.summary())
    info = result.pipeline.info
    print(f"saved {path} ({result.pipeline!r}; data {info['data_hash'][:19]}..., training windows {info['train_hash'][:19]}...)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": str(path), **result.to_json(), "data_hash": info["data_hash"],
                       "train_hash": info["train_hash"]}, f, indent=1)
    return 0


def _cmd_decode(args: argparse.Namespace) -> int:
    from .decoders.offline import PROBA_TOL, compare_online, decode_offline, write_csv

    given_path(args.model, "model file")
    given_path(args.data, "recording")
    pipe, rec, frames = decode_offline(args.model, args.data, args.stream)
    counts = ", ".join(f"{c} {int((frames.index == k).sum())}" for k, c in enumerate(pipe.classes))
    print(f"{len(frames.ends)} windows of {pipe.window / pipe.sfreq:g} s every {pipe.step / pipe.sfreq:g} s decoded "
          f"offline: {counts}")
    if args.out:
        print(f"wrote {write_csv(args.out, pipe, rec, frames)}")
    if args.compare:
        res = compare_online(args.data, args.compare, pipe, frames)
        same = res["labels_equal"] and res["max_abs_dproba"] <= PROBA_TOL
        print(f"online '{args.compare}' vs offline: {res['online_windows']} vs {res['offline_windows']} windows, "
              f"{res['differing_labels']} labels differ, max |p online - p offline| {res['max_abs_dproba']:.3g}: "
              f"{'identical' if same else 'DIFFERENT'}")
        return 0 if same else 1
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .runtime.service import serve

    return serve(args.endpoint, args.process, timeout_s=args.timeout, keys=args.keys)


def _cmd_keys(args: argparse.Namespace) -> int:
    if args.token or args.tls or args.list or args.revoke:
        return _cmd_api_keys(args)
    if args.role:
        raise ConfigError("--role goes with --token NAME: rtneuro keys DIR --token NAME --role observer|steer")
    from .security import AUTHORIZED_FILE, PUBLIC_FILE, SECRET_FILE, create_keys

    keys = create_keys(args.dir, force=args.force)
    d = keys.directory
    print(f"{d}: public key {PUBLIC_FILE} ({keys.public.decode()}), secret {SECRET_FILE} (mode 0600), "
          f"{AUTHORIZED_FILE} lists {len(keys.authorized)} key(s); use it with transport: {{scheme: tcp, keys: {d}}}")
    return 0


def _cmd_api_keys(args: argparse.Namespace) -> int:
    """``rtneuro keys DIR --token NAME --role R`` / ``--tls HOST...`` / ``--list`` / ``--revoke NAME``: the control API's."""
    from pathlib import Path

    from .control.auth import create_tls, create_token, list_tokens, revoke_token

    if sum(bool(x) for x in (args.token, args.tls, args.list, args.revoke)) > 1:
        raise ConfigError("give one of --token NAME, --tls HOST..., --list, --revoke NAME at a time")
    d = Path(args.dir).expanduser()
    if args.token:
        if not args.role:
            raise ConfigError(f"say what token '{args.token}' may do: --role observer (reads) or --role steer (also changes)")
        create_token(d, args.token, args.role, force=args.force)
        print(f"token '{args.token}' ({args.role}) written to {d / (args.token + '.token')} (mode 0600); "
              f"the run accepts it with control: {{tokens: {d}}}; hand the file to its user "
              f"(rtneuro status --url URL --token {d / (args.token + '.token')})")
    elif args.tls:
        cert, key = create_tls(d, args.tls, force=args.force)
        print(f"TLS certificate for {', '.join(args.tls)}: {cert} (clients trust it: --cafile {cert}), key {key} "
              f"(mode 0600); use them with control: {{tls_cert: {cert}, tls_key: {key}}}")
    elif args.list:
        rows = list_tokens(d)
        for row in rows:
            print(f"{row['name']:<20} {row['role']:<9} {row['created']}")
        if not rows:
            print(f"no tokens in {d}; make one with 'rtneuro keys {d} --token NAME --role steer'")
    else:
        revoke_token(d, args.revoke)
        print(f"token '{args.revoke}' revoked in {d}: runs using this folder refuse it from their next request")
    return 0


def _find_runs(run: str | None) -> list[dict]:
    """The running supervisors ``rtneuro stop`` talks to: ``--run``, or every one of this user."""
    import json
    from pathlib import Path

    from .runtime.supervisor import running_supervisors

    if run is not None:
        p = Path(run).expanduser()
        f = p / "control.json" if p.is_dir() else p
        try:
            return [json.loads(f.read_text())]
        except (OSError, ValueError) as exc:
            raise RtneuroError(f"--run {run}: no running rtneuro there ({exc.__class__.__name__}); "
                               "pass the run folder 'rtneuro run' printed, or leave --run out") from None
    runs = running_supervisors()
    if not runs:
        raise RtneuroError("no running rtneuro found: start one with 'rtneuro run CONFIG', or pass --run RUN_FOLDER")
    return runs


def _cmd_stop(args: argparse.Namespace) -> int:
    """Emergency stop (``--now``) or its clear (``--clear``) of running graphs; one line per run."""
    import zmq

    from .messages import pack_control, unpack_control
    from .runtime.clock import lsl_clock
    from .security import curve_client, load_keys

    if args.now == args.clear:
        raise RtneuroError("say what to do: 'rtneuro stop --now' (emergency stop) or 'rtneuro stop --clear'")
    op = "estop" if args.now else "estop_clear"
    runs = _find_runs(args.run)
    if op == "estop_clear" and len(runs) > 1:
        names = ", ".join(f"{r.get('name')} ({r.get('run_dir')})" for r in runs)
        raise RtneuroError(f"{len(runs)} runs are going: {names}; clear one at a time with --run RUN_FOLDER")
    ctx: zmq.Context = zmq.Context.instance()
    socks = []
    for run in runs:  # send to every run first: an emergency stop does not wait for the first answer
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if run.get("keys") and str(run["control"]).startswith("tcp://"):
            curve_client(sock, load_keys(args.keys or run["keys"]))
        sock.connect(run["control"])
        t_sent = lsl_clock()
        t0 = time.perf_counter()
        sock.send(pack_control({"op": op, "t_sent": t_sent, "reason": args.reason}))
        socks.append((run, sock, t_sent, t0))
    code = 0
    what = "emergency stop" if op == "estop" else "emergency stop cleared"
    for run, sock, t_sent, t0 in socks:
        name = run.get("name", "?")
        left = max(0.0, args.timeout - (time.perf_counter() - t0))
        if not sock.poll(int(left * 1000)):
            print(f"{what}: run '{name}' (pid {run.get('pid')}) did not answer within {args.timeout:g} s; "
                  "if it is still running, stop it (Ctrl-C in its terminal, or kill -TERM its pid): "
                  "that also puts every stimulator in its safe state")
            code = 1
            sock.close()
            continue
        rtt_ms = (time.perf_counter() - t0) * 1e3
        reply = unpack_control(sock.recv())
        sock.close()
        expected = reply.get("expected") or []
        ok = reply.get("confirmed") or []
        t_conf = reply.get("t_confirmed")
        lat = f"in {(t_conf - t_sent) * 1e3:.2f} ms (send -> stimulator confirmation; " if isinstance(t_conf, (int, float)) else "(no confirmation time; "
        line = f"{what}: run '{name}': {len(ok)} of {len(expected)} stimulators confirmed {lat}round trip {rtt_ms:.2f} ms)"
        problems = [f"{nid} {why}" for nid, why in (reply.get("failed") or {}).items()]
        problems += [f"process '{p}' did not confirm" for p in reply.get("missing") or []]
        if problems or len(ok) < len(expected):
            line += "; " + "; ".join(problems) + "; stop the run (Ctrl-C) to put every device in its safe state"
            code = 1
        elif op == "estop":
            line += "; latched until 'rtneuro stop --clear'"
        print(line)
    return code

# -- the control API's verbs (rtneuro status, set, annotate, arm, ...) -----------------

def _api_client(args: argparse.Namespace):
    """The control API client of ``--url``/``--token``/``--cafile``, else of the run found by ``--run``."""
    from pathlib import Path

    from .control.client import Client

    token = args.token or os.environ.get("RTNEURO_TOKEN")
    if token and Path(token).expanduser().is_file():
        from .control.auth import read_token

        token = read_token(token)
    if args.url:
        if args.run:
            raise ConfigError("--url and --run do not go together: --url reaches a run anywhere, --run one of this machine")
        if not token:
            raise ConfigError(f"--url {args.url} needs --token TOKEN (or a NAME.token file of 'rtneuro keys DIR --token NAME', "
                              "or $RTNEURO_TOKEN)")
        return Client(args.url, token, verify=args.cafile or True, timeout=args.timeout)
    if args.token or args.cafile:
        raise ConfigError("--token and --cafile go with --url URL (a run of this machine is found without them)")
    return Client.find(args.run, timeout=args.timeout)


def _api(args: argparse.Namespace, call):
    """Run ``call(client)``; with --json print its answer as JSON and return None."""
    with _api_client(args) as client:
        out = call(client)
    if args.json:
        print(json.dumps(out, indent=1))
        return None
    return out


def _fmt(v) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _ms(d) -> str:
    if not isinstance(d, dict) or d.get("p50") is None:
        return "-"
    return f"p50 {d['p50']:.2f} ms, p99 {d.get('p99', float('nan')):.2f} ms"


def _at(res: dict) -> str:
    """``, LSL time T (stream time S s)`` of an answer, as far as it has them."""
    t_lsl, t_stream = res.get("t_lsl"), res.get("t_stream")
    out = f", LSL time {t_lsl:.4f}" if isinstance(t_lsl, (int, float)) else ""
    return out + (f", stream time {t_stream:.4f} s" if isinstance(t_stream, (int, float)) else "")


def _cmd_status(args: argparse.Namespace) -> int:
    def call(c):
        out = {"status": c.status()}
        if args.params:
            out["graph"] = c.graph()
        return out if args.params else out["status"]

    res = _api(args, call)
    if res is None:
        return 0
    st, graph = (res["status"], res["graph"]) if args.params else (res, None)
    stim = st.get("stimulation") or {}
    if stim.get("estop"):
        arming = "EMERGENCY STOP latched ('rtneuro stop --clear')"
    elif stim.get("stimulators"):
        arming = "stimulation armed" if stim.get("armed") else "stimulation DISARMED ('rtneuro arm')"
    else:
        arming = "no stimulator"
    rec = st.get("recording") or {}
    recording = (f"recording segment {rec.get('segment')!r} to {rec.get('path')}" if rec.get("active")
                 else "not recording")
    t = st.get("t_run_s")
    speed = st.get("speed")
    print(f"run '{st.get('name')}': {st.get('state')}" + (f" for {t:.1f} s" if isinstance(t, (int, float)) else "")
          + (f" (speed {speed})" if speed not in (None, 1, 1.0, "realtime") else "")
          + f"; {arming}; {'PAUSED' if st.get('paused') else 'not paused'}; {recording}")
    for sid, why in (stim.get("stimulators") or {}).items():
        print(f"  stimulator {sid}: {why}")
    for name, row in (st.get("streams") or {}).items():
        rate = row.get("rate_hz")
        rate_s = f"{rate:8.2f} Hz" if isinstance(rate, (int, float)) else "       - Hz"
        print(f"  {row.get('kind', '?')}.{name:<20} {rate_s}  gaps {row.get('gaps', 0)}  invalid {row.get('invalid', 0)}"
              f"  latency {_ms(row.get('latency_ms'))}")
    lat = st.get("latency_ms")
    if isinstance(lat, dict) and lat.get("n"):
        print(f"  loop latency to the stimulator: {_ms(lat)} (n {lat['n']})")
    api = st.get("api") or {}
    refused = api.get("refused") or {}
    print(f"  errors {st.get('errors', 0)}, warnings {st.get('warnings', 0)}; API requests {api.get('requests', 0)}"
          + (f", refused {', '.join(f'{k} {v}' for k, v in refused.items())}" if refused else ""))
    if graph is not None:
        print("live parameters ('rtneuro set NODE.PARAM=VALUE'):")
        n = 0
        for nid, node in (graph.get("nodes") or {}).items():
            for pname, spec in (node.get("live") or {}).items():
                n += 1
                bounds = ", ".join(f"{op} {spec[k]:g}" for k, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
                                   if isinstance(spec.get(k), (int, float)))
                extra = "; ".join(x for x in (spec.get("type"), bounds,
                                              f"only {spec['stricter']} while running" if spec.get("stricter") else "") if x)
                print(f"  {nid}.{pname} = {_fmt(spec.get('value'))}  ({extra})")
        if not n:
            print("  none (no node of this graph declares live parameters)")
    return 0


_EXP_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_assignments(items: list[str]) -> dict:
    """``NODE.PARAM=VALUE`` words -> ``{"NODE.PARAM": value}``, each VALUE read as YAML (``2.5``, ``false``, ``[8, 12]``)."""
    import yaml

    out: dict = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        node, dot, param = key.partition(".")
        if not sep or not dot or not node or not param:
            raise ConfigError(f"{item!r} is not NODE.PARAM=VALUE; write e.g. thr.threshold=2.5 or bp.band='[8, 12]'")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            where = f" ({exc.problem})" if getattr(exc, "problem", None) else ""
            raise ConfigError(f"{key}: value {text!r} is not a YAML value{where}; quote a list for the shell: {key}='[8, 12]'") from None
        if isinstance(value, str) and _EXP_FLOAT.fullmatch(value):  # YAML 1.1 reads 1e-3 as a string
            value = float(value)
        if key in out:
            raise ConfigError(f"{key} is given twice; give each parameter once")
        out[key] = value
    return out


def _cmd_set(args: argparse.Namespace) -> int:
    changes = parse_assignments(args.changes)
    res = _api(args, lambda c: c.set(changes, wait_s=args.wait))
    if res is None:
        return 0
    state = res.get("status")
    print(f"change {res.get('id')} {state}: " + ", ".join(f"{k} = {_fmt(v)}" for k, v in changes.items()))
    for node, at in (res.get("applied") or {}).items():
        if not isinstance(at, dict):
            continue
        where = (f"from sample {at['index']} of stream '{at.get('stream')}'" if at.get("index") is not None
                 else "from its next chunk")
        t = at.get("t_stream")
        print(f"  {node}: {where}" + (f" (t {t:.4f} s)" if isinstance(t, (int, float)) else ""))
    for node, why in (res.get("errors") or {}).items():
        print(f"  {node}: NOT applied: {why}")
    if state == "pending":
        print(f"  not applied within {args.wait:g} s (a paused input?); 'rtneuro changes' shows where it took effect")
    return 1 if state in ("partial", "failed") else 0


def _print_action(res: dict, what: str) -> int:
    code = 0
    parts = []
    for sid, why in (res.get("stimulators") or {}).items():
        parts.append(f"{sid} {why}")
        if str(why) != "ok":
            code = 1
    line = f"{what} (change {res.get('id')})" + (f": {', '.join(parts)}" if parts else "")
    if code:
        line += "; for a stimulator that failed, stop the run ('rtneuro stop --now', or Ctrl-C) to put it in its safe state"
    print(line)
    return code


def _cmd_arm(args: argparse.Namespace) -> int:
    op = args.command
    res = _api(args, lambda c: getattr(c, op)(args.reason))
    if res is None:
        return 0
    state = "armed" if res.get("armed") else "disarmed"
    return _print_action(res, f"stimulation {state}")


def _cmd_annotate(args: argparse.Namespace) -> int:
    res = _api(args, lambda c: c.annotate(args.text))
    if res is not None:
        print(f"annotation {res.get('id')}{_at(res)}")
    return 0


def _cmd_record(args: argparse.Namespace) -> int:
    if args.action == "stop" and args.label is not None:
        raise ConfigError("'rtneuro record stop' takes no label (the label names a segment at 'rtneuro record start LABEL')")
    res = _api(args, lambda c: c.record_start(args.label) if args.action == "start" else c.record_stop())
    if res is not None:
        print(f"recording segment {res.get('segment')!r} {'started' if args.action == 'start' else 'stopped'} "
              f"(change {res.get('id')}{_at(res)})")
    return 0


def _cmd_pause(args: argparse.Namespace) -> int:
    op = args.command
    res = _api(args, lambda c: getattr(c, op)())
    if res is not None:
        print(f"replay {'paused' if res.get('paused') else 'running'} (change {res.get('id')}{_at(res)})")
    return 0


def _cmd_changes(args: argparse.Namespace) -> int:
    res = _api(args, lambda c: c.changes(args.since))
    if res is None:
        return 0
    for rec in res:
        args_s = ", ".join(f"{k}={_fmt(v)}" for k, v in (rec.get("args") or {}).items())
        if rec.get("op") == "set" and isinstance((rec.get("args") or {}).get("changes"), dict):
            args_s = ", ".join(f"{k}={_fmt(v)}" for k, v in rec["args"]["changes"].items())
        at = "; ".join(f"{n} at {a.get('stream')}[{a.get('index')}]" for n, a in (rec.get("applied") or {}).items()
                       if isinstance(a, dict) and a.get("index") is not None)
        print(f"#{rec.get('seq')} {rec.get('t_lsl')} {rec.get('who')} {rec.get('op')} {args_s}" + (f" -> {at}" if at else ""))
    if not res:
        print("no changes yet" if args.since == 0 else f"no changes after #{args.since}")
    return 0


def _add_api_verbs(sub) -> None:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("which run")
    g.add_argument("--run", default=None, help="a run of this machine: its folder, graph name or pid (default: the only one)")
    g.add_argument("--url", default=None, help="a remote run's control API, e.g. https://rig-2:8765")
    g.add_argument("--token", default=None, help="with --url: the token, or its NAME.token file (default: $RTNEURO_TOKEN)")
    g.add_argument("--cafile", default=None, metavar="PEM", help="with an https --url: the server's tls_cert.pem")
    g.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer")
    g.add_argument("--json", action="store_true", help="print the API's answer as JSON")

    st = sub.add_parser("status", parents=[common], help="a running graph's state: streams, stimulation, pause, recording")
    st.add_argument("--params", action="store_true", help="also list the live parameters and their values")
    st.set_defaults(func=_cmd_status)

    se = sub.add_parser("set", parents=[common], help="change live parameters of a running graph (all or none)")
    se.add_argument("changes", nargs="+", metavar="NODE.PARAM=VALUE", help="VALUE as YAML: 2.5, false, '[8, 12]'")
    se.add_argument("--wait", type=float, default=2.0, help="seconds to wait for the change to take effect")
    se.set_defaults(func=_cmd_set)

    an = sub.add_parser("annotate", parents=[common], help="stamp a text on the running graph's LSL clock")
    an.add_argument("text")
    an.set_defaults(func=_cmd_annotate)

    for verb, what in (("arm", "arm stimulation"), ("disarm", "disarm stimulation (safe state until armed)")):
        a = sub.add_parser(verb, parents=[common], help=what)
        a.add_argument("--reason", default=None, help="recorded with the action")
        a.set_defaults(func=_cmd_arm)

    rc = sub.add_parser("record", parents=[common], help="start or stop a recording segment of a run with --record")
    rc.add_argument("action", choices=["start", "stop"])
    rc.add_argument("label", nargs="?", default=None, help="the segment's label (start)")
    rc.set_defaults(func=_cmd_record)

    for verb, what in (("pause", "pause a run's replayed sources"), ("resume", "resume a run's replayed sources")):
        pz = sub.add_parser(verb, parents=[common], help=what)
        pz.set_defaults(func=_cmd_pause)

    ch = sub.add_parser("changes", parents=[common], help="the changes and actions accepted by a running graph")
    ch.add_argument("--since", type=int, default=0, help="only those after this number")
    ch.set_defaults(func=_cmd_changes)



def _cmd_probe(args: argparse.Namespace) -> int:
    from .probe import main as probe_main

    return probe_main(args.probe_args)


def _cmd_bench(args: argparse.Namespace) -> int:
    import importlib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if not (root / "benchmarks" / f"{args.name}.py").exists():
        raise RtneuroError(f"rtneuro bench needs the source checkout's benchmarks/ folder (not found next to {root / 'rtneuro'}); clone the repository and install it with 'pip install -e .[bench]'")
    sys.path.insert(0, str(root))
    module = importlib.import_module(f"benchmarks.{args.name}")
    return module.run(args)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import load_spec, run_sweep, summary

    if args.summary:
        print(summary(args.summary))
        return 0
    if not args.spec:
        raise ConfigError("rtneuro sweep: give SPEC.yaml (or --summary RESULTS)")
    spec = load_spec(args.spec)
    if args.out:
        from dataclasses import replace
        from pathlib import Path

        spec = replace(spec, out=Path(args.out).expanduser().resolve())
    if args.optimize:
        from .sweep.engine import run_optimize

        goal = args.goal or (spec.objective or {}).get("goal", "min") if (spec.objective or {}).get("metric") == args.optimize else args.goal or "min"
        res = run_optimize(spec, args.optimize, args.trials, goal=goal, scheduler=args.scheduler, workers=args.workers)
    else:
        res = run_sweep(spec, scheduler=args.scheduler, workers=args.workers, force=args.force)
    print(summary(res["folder"]))
    if res["interrupted"]:
        return 130
    return 0 if res["failed"] == 0 and res["missing"] == 0 else 1


def _cmd_nodes(args: argparse.Namespace) -> int:
    from .nodes import NODE_TYPES, node_class
    from .nodes.base import _type_name

    for name in sorted(NODE_TYPES):
        cls = node_class(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        print(f"{name}  ({cls.category})  {doc}")
        hints = typing.get_type_hints(cls.Params)
        for f in dataclasses.fields(cls.Params):
            if f.default is not dataclasses.MISSING:
                default = f" = {f.default!r}"
            elif callable(f.default_factory):
                default = f" = {f.default_factory()!r}"
            else:
                default = ""
            tname = _type_name(hints[f.name])
            note = f"  # {f.metadata['doc']}" if f.metadata.get("doc") else ""
            print(f"    {f.name}: {tname}{default}{note}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rtneuro", description="Real-time closed-loop neural signal processing.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a graph")
    r.add_argument("config", help="graph YAML file")
    r.add_argument("--duration", type=float, default=None, help="stop after S seconds (default: end of the data)")
    r.add_argument("--speed", default=None, help="realtime, max (as fast as possible, virtual clock) or a factor such as 8")
    r.add_argument("--report", default=None, help="write the JSON run report here")
    r.add_argument("--record", default=None, metavar="DIR", help="record every stream, decision and its provenance to a session file (XDF) in DIR")
    r.add_argument("--control", default=None, metavar="HOST:PORT", help="where the control API listens (default: the config's control: section, "
                   "127.0.0.1 on a free port); 'off': no control server")
    r.add_argument("--ui", action="store_true", help="serve the operator dashboard and the participant display in the browser "
                   "(their addresses are printed; docs/ui.md)")
    r.add_argument("--quiet", action="store_true", help="no live status")
    r.add_argument("--verbose", action="store_true", help="log at INFO level")
    r.set_defaults(func=_cmd_run)

    d = sub.add_parser("demo", help="run the demo (or another example configuration) from the installed package")
    d.add_argument("name", nargs="?", default="demo", help="example configuration (default: demo; see --list)")
    d.add_argument("--list", action="store_true", help="list the example configurations and where they are")
    d.add_argument("--duration", type=float, default=None, help="stop after S seconds (default: end of the data)")
    d.add_argument("--speed", default=None, help="realtime, max or a factor (default: the configuration's; the demo's is 8)")
    d.add_argument("--report", default=None, help="write the JSON run report here (default: NAME-report.json in the current folder)")
    d.add_argument("--ui", action="store_true", help="serve the operator dashboard and the participant display (docs/ui.md)")
    d.add_argument("--quiet", action="store_true", help="no live status")
    d.set_defaults(func=_cmd_demo)

    v = sub.add_parser("validate", help="check a graph file without running it")
    v.add_argument("config")
    v.add_argument("--strict", action="store_true", help="fail (exit 2) when a live LSL input is not running, "
                   "instead of checking against its declared ch_names and sfreq with a warning")
    v.set_defaults(func=_cmd_validate)

    rp = sub.add_parser("replay", help="play a recording as LSL outlets, or check a recorded session")
    rp.add_argument("file", help="EDF/BDF/FIF/BrainVision/EEGLAB/... or .xdf (a session, with --check)")
    rp.add_argument("--lsl", action="store_true", help="publish as LSL outlets (data and markers)")
    rp.add_argument("--check", action="store_true", help="rerun a recorded session through its graph on the virtual clock; report differing decisions")
    rp.add_argument("--config", default=None, help="with --check: a (possibly changed) graph to rerun instead of the recorded one")
    rp.add_argument("--json", default=None, help="with --check: write the result here")
    rp.add_argument("--without-control", action="store_true",
                    help="with --check: do not apply the session's live changes and operator actions (what the graph would have decided without them)")
    rp.add_argument("--name", default=None, help="outlet name (default: the file name; other streams get NAME-<stream>); "
                    "an XDF file's outlets keep their recorded names and types, and NAME renames the main one")
    rp.add_argument("--main", default=None, metavar="QUERY", help="an XDF file's main stream: name=...,type=...,source_id=... "
                    "(default: the electrophysiology stream of highest rate, else the only numeric one; an error when ambiguous)")
    rp.add_argument("--speed", default="realtime", help="realtime or a factor such as 2")
    rp.add_argument("--chunk-size", type=int, default=None, help="samples per chunk (default: the device's when known, else 0.1 s)")
    rp.add_argument("--loop", action="store_true", help="start again at the end (MNE-readable files)")
    rp.add_argument("--quiet", action="store_true", help="no live status")
    rp.set_defaults(func=_cmd_replay)

    ex = sub.add_parser("export", help="export a recorded session to FIF, EDF or NWB")
    ex.add_argument("session", help="the .xdf session ('rtneuro run --record')")
    ex.add_argument("--to", required=True, help="fif, edf or nwb")
    ex.add_argument("--out", default=None, help="folder to write to (default: the session's); for nwb a .nwb path")
    ex.add_argument("--stream", action="append", default=None, help="a stream to export (repeat; default: every signal stream)")
    ex.set_defaults(func=_cmd_export)

    t = sub.add_parser("train", help="calibrate a graph's decoder on a recording: cross-validate, fit, save the model")
    t.add_argument("config", help="graph YAML file with a 'decoder' node (its train: block says what to fit)")
    t.add_argument("--data", nargs="+", required=True, help="recording(s) MNE opens, with annotations marking the trials")
    t.add_argument("--labels", default=None, help="ANNOTATION=CLASS pairs, e.g. T1=left,T2=right (default: the node's train.labels)")
    t.add_argument("--node", default=None, help="the decoder node to train (when the graph has several)")
    t.add_argument("--out", default=None, help="model file to write (default: the node's model path)")
    t.add_argument("--json", default=None, help="write the cross-validation results here")
    t.set_defaults(func=_cmd_train)

    dc = sub.add_parser("decode", help="apply a trained model offline to a recording or a session; compare with what it decoded live")
    dc.add_argument("model", help="model file written by 'rtneuro train'")
    dc.add_argument("--data", required=True, help="a recording MNE opens, or a session .xdf")
    dc.add_argument("--stream", default=None, help="the session's signal stream (default: its only one)")
    dc.add_argument("--compare", default=None, metavar="STREAM", help="the session's decoder stream: exit 1 unless online == offline")
    dc.add_argument("--out", default=None, help="write the predictions here (CSV)")
    dc.set_defaults(func=_cmd_decode)

    s = sub.add_parser("serve", help="run one process of a graph whose supervisor is on another host")
    s.add_argument("endpoint", help="the supervisor's control endpoint, as printed by 'rtneuro run' (tcp://host:port)")
    s.add_argument("process", help="the process to run (launch: remote in the graph)")
    s.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the supervisor")
    s.add_argument("--keys", default=None, help="this host's copy of the run's transport.keys folder (rtneuro keys)")
    s.set_defaults(func=_cmd_serve)

    st = sub.add_parser("stop", help="emergency stop of running graphs (--now), or clear it (--clear)")
    st.add_argument("--now", action="store_true", help="every stimulator to its safe state at once, latched")
    st.add_argument("--clear", action="store_true", help="release the latched emergency stop (one run)")
    st.add_argument("--run", default=None, help="the run folder printed by 'rtneuro run' (default: every run of this user)")
    st.add_argument("--keys", default=None, help="CURVE keys folder for a tcp control socket (default: the run's)")
    st.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the confirmation")
    st.add_argument("--reason", default="operator (rtneuro stop)", help="recorded in the run report")
    st.set_defaults(func=_cmd_stop)

    k = sub.add_parser("keys", help="create a CURVE keypair for tcp transport, or the control API's tokens and TLS certificate")
    k.add_argument("dir", help="folder to create (mode 0700); name it in the graph as transport.keys (or control.tokens)")
    k.add_argument("--force", action="store_true", help="replace an existing keypair, token or certificate")
    k.add_argument("--token", default=None, metavar="NAME", help="make a control API token NAME (with --role)")
    k.add_argument("--role", default=None, choices=["observer", "steer"], help="observer: reads; steer: also changes")
    k.add_argument("--tls", nargs="+", default=None, metavar="HOST", help="make a TLS certificate for these names/addresses")
    k.add_argument("--list", action="store_true", help="list the control API tokens of DIR")
    k.add_argument("--revoke", default=None, metavar="NAME", help="revoke control API token NAME")
    k.set_defaults(func=_cmd_keys)

    _add_api_verbs(sub)

    pr = sub.add_parser("probe", help="time a running graph over LSL, from a probe outlet to one of its outlets",
                        add_help=False)
    pr.add_argument("probe_args", nargs=argparse.REMAINDER)
    pr.set_defaults(func=_cmd_probe)

    b = sub.add_parser("bench", help="run a benchmark (latency, lsl, dsp, safety, record, models, adbs, decoders, bursts, ephys, control, ui, sweep, analysis)")
    b.add_argument("name", choices=["latency", "lsl", "dsp", "safety", "record", "models", "adbs", "decoders", "bursts", "ephys",
                                    "control", "ui", "sweep", "analysis"])
    b.add_argument("--json", default=None, help="write results here")
    b.add_argument("--duration", type=float, default=20.0, help="seconds measured per variant")
    b.add_argument("--variants", default=None, help="comma-separated subset of variants")
    b.add_argument("--cpu-dma-latency", type=int, default=None, metavar="US",
                   help="hold this Linux PM QoS CPU latency for every variant (needs root)")
    b.add_argument("--changes", type=int, default=200, metavar="N",
                   help="bench control: live parameter changes timed through the control API (default 200)")
    b.set_defaults(func=_cmd_bench)

    sw = sub.add_parser("sweep", help="replay a graph over many recordings and a parameter grid, on Dask; tables and a report")
    sw.add_argument("spec", nargs="?", help="the sweep's YAML (config, recordings, grid, metrics)")
    sw.add_argument("--scheduler", default=None, metavar="ADDRESS", help="a Dask scheduler (tcp://host:8786); default: a local cluster")
    sw.add_argument("--workers", type=int, default=None, help="local workers (default: the spec's, else one per core)")
    sw.add_argument("--out", default=None, help="results folder (default: the spec's out:, else <name>-results next to it)")
    sw.add_argument("--force", action="store_true", help="rerun the jobs that have a result")
    sw.add_argument("--summary", default=None, metavar="RESULTS", help="print the summary of a results folder and stop")
    sw.add_argument("--optimize", default=None, metavar="METRIC", help="search the spec's search: ranges with Optuna for this metric")
    sw.add_argument("--trials", type=int, default=20, help="--optimize: trials (each: the jobs of one sampled point)")
    sw.add_argument("--goal", choices=["min", "max"], default=None, help="--optimize: minimise or maximise (default: the spec's objective, else min)")
    sw.set_defaults(func=_cmd_sweep)

    n = sub.add_parser("nodes", help="list node types and their parameters")
    n.set_defaults(func=_cmd_nodes)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            sys.stderr.write(f"error: {line}\n")
        return EXIT_CONFIG
    except RtneuroError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except KeyboardInterrupt:  # pragma: no cover - before the supervisor installs its handlers
        return 130
