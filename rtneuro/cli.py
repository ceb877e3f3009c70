"""The ``rtneuro`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import typing

from .errors import ConfigError, RtneuroError

EXIT_CONFIG = 2


def _cmd_validate(args: argparse.Namespace) -> int:
    from .config import load_graph

    graph = load_graph(args.config)
    print(f"{args.config}: valid graph '{graph.name}' with {len(graph.nodes)} nodes in {len(graph.processes)} processes")
    for proc in graph.processes.values():
        print(f"  process {proc.name} ({proc.service}, restart {proc.restart} x{proc.max_restarts}): {', '.join(proc.nodes)}")
    for name, meta in graph.streams.items():
        shape = f"{meta.n_channels} ch" if meta.kind in ("sig", "feat") else meta.dtype
        rate = f"{meta.sfreq:g} Hz" if meta.sfreq else "irregular"
        print(f"  stream {meta.kind}.{name}: {shape}, {rate}, from {graph.producer[name]}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .config import load_graph
    from .runtime.supervisor import Supervisor

    if args.verbose:
        os.environ["RTNEURO_LOG"] = "INFO"
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="[supervisor] %(levelname)s %(message)s")
    graph = load_graph(args.config, overrides={"speed": args.speed, "duration_s": args.duration})
    sup = Supervisor(graph, report_path=args.report, quiet=args.quiet)
    return sup.run()


def _cmd_serve(args: argparse.Namespace) -> int:
    from .runtime.service import serve

    return serve(args.endpoint, args.process, timeout_s=args.timeout)


def _cmd_bench(args: argparse.Namespace) -> int:
    import importlib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if not (root / "benchmarks" / f"{args.name}.py").exists():
        raise RtneuroError(f"rtneuro bench needs the source checkout's benchmarks/ folder (not found next to {root / 'rtneuro'}); clone the repository and install it with 'pip install -e .[bench]'")
    sys.path.insert(0, str(root))
    module = importlib.import_module(f"benchmarks.{args.name}")
    return module.run(args)


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
    r.add_argument("--quiet", action="store_true", help="no live status")
    r.add_argument("--verbose", action="store_true", help="log at INFO level")
    r.set_defaults(func=_cmd_run)

    v = sub.add_parser("validate", help="check a graph file without running it")
    v.add_argument("config")
    v.set_defaults(func=_cmd_validate)

    s = sub.add_parser("serve", help="run one process of a graph whose supervisor is on another host")
    s.add_argument("endpoint", help="the supervisor's control endpoint, as printed by 'rtneuro run' (tcp://host:port)")
    s.add_argument("process", help="the process to run (launch: remote in the graph)")
    s.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the supervisor")
    s.set_defaults(func=_cmd_serve)

    b = sub.add_parser("bench", help="run a benchmark (latency)")
    b.add_argument("name", choices=["latency"])
    b.add_argument("--json", default=None, help="write results here")
    b.add_argument("--duration", type=float, default=20.0, help="seconds measured per variant")
    b.add_argument("--variants", default=None, help="comma-separated subset of variants")
    b.add_argument("--cpu-dma-latency", type=int, default=None, metavar="US",
                   help="hold this Linux PM QoS CPU latency for every variant (needs root)")
    b.set_defaults(func=_cmd_bench)

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
