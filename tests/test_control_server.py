"""The control API server and client over real HTTP and WebSocket, with a small stand-in hub.

The hub here is a stand-in for :class:`rtneuro.control.hub.Hub` with the same
methods, so that route shapes, authentication, error mapping and malformed
bodies are tested without a running graph; the tests against live graphs
use the real hub.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtneuro.cli import parse_assignments
from rtneuro.control.auth import TokenAuth, create_tls, create_token, mint_run_token
from rtneuro.control.client import Client
from rtneuro.control.live import ControlError
from rtneuro.control.server import MAX_BODY, ControlServer, api_markdown, openapi_schema
from rtneuro.errors import ConfigError, RtneuroError

from conftest import ROOT, synthetic_chain

STEER, OBSERVER = mint_run_token(), mint_run_token()

ROUTES = {
    ("GET", "/api/graph"), ("GET", "/api/status"), ("GET", "/api/report"), ("GET", "/api/changes"),
    ("POST", "/api/params"), ("POST", "/api/annotations"), ("POST", "/api/stimulation/arm"),
    ("POST", "/api/stimulation/disarm"), ("POST", "/api/stimulation/estop"), ("POST", "/api/stimulation/estop/clear"),
    ("POST", "/api/recording/start"), ("POST", "/api/recording/stop"), ("POST", "/api/replay/pause"),
    ("POST", "/api/replay/resume"),
}


class FakeSubscription:
    def __init__(self) -> None:
        self.q: queue.Queue = queue.Queue()
        self.closed_evt = threading.Event()

    def get(self, timeout_s: float) -> dict | None:
        try:
            return self.q.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.closed_evt.set()


class FakeHub:
    """The Hub's interface over a dict of live parameters; checks what the real one checks, crudely."""

    name = "fake"

    def __init__(self) -> None:
        self.params = {"thr": {"threshold": 2.0, "enabled": True}, "bp": {"band": [8.0, 12.0]}}
        self.requests: list[tuple[str, dict, str, float]] = []
        self.refusals: list[tuple[str, str, str]] = []
        self.subs: list[FakeSubscription] = []
        self.records: list[dict] = []
        self.fail: Exception | None = None
        self.pending = False
        self.lock = threading.Lock()

    def graph(self) -> dict:
        nodes = {nid: {"type": "threshold", "category": "processor", "process": "p", "inputs": ["x"], "outputs": [nid],
                       "live": {p: {"type": type(v).__name__, "value": v, "doc": "", "stricter": None} for p, v in ps.items()}}
                 for nid, ps in self.params.items()}
        return {"name": self.name, "config": "g.yaml", "speed": 1.0, "processes": {"p": {"service": "processor"}},
                "nodes": nodes, "streams": {"x": {"kind": "sig", "sfreq": 250.0}}}

    def status(self) -> dict:
        if self.fail is not None:
            raise self.fail
        return {"name": self.name, "state": "running", "t_run_s": 12.5, "speed": 1.0,
                "streams": {"x": {"kind": "sig", "rate_hz": 250.0, "gaps": 0, "invalid": 0,
                                  "latency_ms": {"p50": 1.5, "p99": 3.25}}},
                "latency_ms": {"p50": 2.0, "p99": 4.0, "n": 100},
                "stimulation": {"armed": True, "estop": False, "stimulators": {"stim": "ok"}},
                "paused": False, "recording": {"active": False, "segment": None, "path": None},
                "errors": 0, "warnings": 0, "api": {"requests": len(self.requests), "refused": self.refused_counts()}}

    def refused_counts(self) -> dict:
        out: dict = {}
        for reason, _, _ in self.refusals:
            out[reason] = out.get(reason, 0) + 1
        return out

    def report(self) -> dict:
        return {"streams": {"x": {"samples": 100}}, "nan": float("nan")}

    def changes(self, since: int = 0) -> list[dict]:
        return [r for r in self.records if r["seq"] > since]

    def request(self, op: str, args: dict, who: str, timeout_s: float = 2.0) -> dict:
        with self.lock:
            self.requests.append((op, args, who, timeout_s))
            if op == "set":
                result = self._set(args["changes"])
            elif op == "annotate":
                result = {"t_lsl": 100.0, "t_stream": 12.5}
            elif op in ("arm", "disarm"):
                result = {"armed": op == "arm", "stimulators": {"stim": "ok"}}
            elif op in ("estop", "estop_clear"):
                result = {"latched": op == "estop", "stimulators": {"stim": "ok"}}
            elif op == "record_start":
                raise ControlError("the run records nothing; start the run with --record DIR", 409)
            elif op in ("pause", "resume"):
                result = {"paused": op == "pause", "t_lsl": 100.0}
            else:
                result = {"segment": "s1", "t_lsl": 100.0, "t_stream": None}
            rec = {"seq": len(self.records) + 1, "id": len(self.records) + 1, "op": op, "who": who, "t_lsl": 100.0,
                   "t_stream": 12.5, "args": args, "applied": result.get("applied"), "result": result}
            self.records.append(rec)
            return {"id": rec["id"], **result}

    def _set(self, changes: dict) -> dict:
        new: dict = {}
        for key, value in changes.items():
            node, _, param = key.partition(".")
            if node not in self.params:
                raise ControlError(f"no node '{node}'", 404)
            if param not in self.params[node]:
                raise ControlError(f"node '{node}' has no parameter '{param}'", 404)
            if type(value) is not type(self.params[node][param]):
                raise ControlError(f"node '{node}' parameter '{param}' must be {type(self.params[node][param]).__name__}", 422)
            new.setdefault(node, {})[param] = value
        for node, ps in new.items():
            self.params[node].update(ps)
        applied = {n: {"stream": "x", "index": 1234, "t_lsl": 100.0, "t_stream": 4.936} for n in new}
        return {"status": "pending" if self.pending else "applied", "applied": applied,
                "values": {n: dict(self.params[n]) for n in new}}

    def subscribe(self) -> FakeSubscription:
        sub = FakeSubscription()
        self.subs.append(sub)
        return sub

    def refused(self, reason: str, peer: str, detail: str = "") -> None:
        self.refusals.append((reason, peer, detail))


def _auth() -> TokenAuth:
    return TokenAuth(None, extra={"local": (STEER, "steer"), "watcher": (OBSERVER, "observer")})


@pytest.fixture(scope="module")
def served():
    hub = FakeHub()
    srv = ControlServer(hub, _auth())
    url = srv.start()
    yield hub, srv, url
    srv.stop()


@pytest.fixture()
def api(served):
    hub, srv, url = served
    hub.requests.clear()
    hub.refusals.clear()
    hub.fail, hub.pending = None, False
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {STEER}"}, timeout=30) as http:
        yield hub, url, http


def _one_line_error(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"], str) and body["error"] and "\n" not in body["error"]
    return body["error"]


def _until(cond, what: str, limit_s: float = 30.0) -> None:
    """Wait for a condition (a bound against hangs, not a timing assertion)."""
    t_end = time.monotonic() + limit_s
    while not cond():
        if time.monotonic() > t_end:
            raise AssertionError(f"{what} did not happen")
        time.sleep(0.01)


# -- routes and their shapes ---------------------------------------------------------

def test_reading_routes_return_the_hubs_answers(api):
    hub, _, http = api
    g = http.get("/api/graph").json()
    assert g["name"] == "fake" and g["nodes"]["thr"]["live"]["threshold"]["value"] == 2.0
    s = http.get("/api/status").json()
    assert s["state"] == "running" and s["streams"]["x"]["rate_hz"] == 250.0
    rep = http.get("/api/report")
    assert rep.status_code == 200 and rep.json()["nan"] == "nan"  # non-finite floats made plain, not a 500
    ch = http.get("/api/changes", params={"since": 0}).json()
    assert set(ch) == {"changes", "seq"}


def test_params_applies_and_acks_with_the_sample_index(api):
    hub, _, http = api
    r = http.post("/api/params", json={"changes": {"thr.threshold": 2.5, "thr.enabled": False}}, params={"wait_s": 0.5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "applied" and body["applied"]["thr"]["index"] == 1234
    assert body["values"]["thr"] == {"threshold": 2.5, "enabled": False}
    assert hub.requests[-1] == ("set", {"changes": {"thr.threshold": 2.5, "thr.enabled": False}}, "local", 0.5)
    ch = http.get("/api/changes", params={"since": 0}).json()
    assert ch["changes"][-1]["op"] == "set" and ch["changes"][-1]["who"] == "local" and ch["seq"] == ch["changes"][-1]["seq"]
    assert http.get("/api/changes", params={"since": ch["seq"]}).json() == {"changes": [], "seq": ch["seq"]}


def test_a_pending_change_is_202(api):
    hub, _, http = api
    hub.pending = True
    r = http.post("/api/params", json={"changes": {"thr.threshold": 3.0}})
    assert r.status_code == 202 and r.json()["status"] == "pending"


@pytest.mark.parametrize(("path", "body", "op", "args"), [
    ("/api/annotations", {"text": "block 2 starts"}, "annotate", {"text": "block 2 starts"}),
    ("/api/stimulation/arm", None, "arm", {}),
    ("/api/stimulation/disarm", {"reason": "participant moves"}, "disarm", {"reason": "participant moves"}),
    ("/api/stimulation/estop", {}, "estop", {}),
    ("/api/stimulation/estop/clear", {"reason": None}, "estop_clear", {}),
    ("/api/recording/stop", None, "record_stop", {}),
    ("/api/replay/pause", None, "pause", {}),
    ("/api/replay/resume", None, "resume", {}),
])
def test_action_routes_call_the_hub_with_the_op(api, path, body, op, args):
    hub, _, http = api
    r = http.post(path, json=body) if body is not None else http.post(path)
    assert r.status_code == 200, r.text
    assert hub.requests[-1][:3] == (op, args, "local")
    assert isinstance(r.json()["id"], int)


def test_control_errors_keep_their_status_and_line(api):
    hub, _, http = api
    r = http.post("/api/params", json={"changes": {"thrr.threshold": 1.0}})
    assert r.status_code == 404 and _one_line_error(r) == "no node 'thrr'"
    r = http.post("/api/params", json={"changes": {"thr.threshold": "high"}})
    assert r.status_code == 422 and "must be float" in _one_line_error(r)
    r = http.post("/api/recording/start", json={"label": "b2"})
    assert r.status_code == 409 and "--record DIR" in _one_line_error(r)
    assert hub.params["thr"]["threshold"] != "high"


def test_an_unexpected_hub_failure_is_a_500_line_and_the_server_goes_on(api, caplog):
    hub, _, http = api
    hub.fail = RuntimeError("boom\nsecond line")
    with caplog.at_level("ERROR", logger="rtneuro.control.server"):
        r = http.get("/api/status")
    assert r.status_code == 500 and "RuntimeError" in _one_line_error(r)
    assert any(rec.exc_info for rec in caplog.records)  # logged with its traceback
    hub.fail = None
    assert http.get("/api/status").status_code == 200


def test_unknown_routes_and_methods_are_one_line(api):
    hub, _, http = api
    r = http.get("/api/statuss")
    assert r.status_code == 404 and "did you mean '/api/status'" in _one_line_error(r)
    r = http.get("/api/params")
    assert r.status_code == 405 and "use POST" in _one_line_error(r)
    assert ("no_route" in {x[0] for x in hub.refusals})


# -- authentication ------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path"), sorted(ROUTES))
def test_every_route_needs_a_token(served, method, path):
    hub, _, url = served
    n = len(hub.refusals)
    for headers, reason in (({}, "no_token"), ({"Authorization": "Bearer rtn_not-a-known-token"}, "bad_token"),
                            ({"Authorization": f"Basic {STEER}"}, "no_token")):
        r = httpx.request(method, url + path, headers=headers, json={"changes": {"thr.threshold": 9.0}}
                          if path == "/api/params" else None)
        assert r.status_code == 401, (path, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
        assert "token" in _one_line_error(r)
        assert hub.refusals[-1][0] == reason and hub.refusals[-1][1].startswith("127.0.0.1:")
    assert len(hub.refusals) == n + 3
    assert hub.params["thr"]["threshold"] != 9.0


def test_an_observer_reads_but_cannot_steer(served):
    hub, _, url = served
    head = {"Authorization": f"Bearer {OBSERVER}"}
    assert httpx.get(url + "/api/status", headers=head).status_code == 200
    before = len(hub.requests)
    for method, path in sorted(ROUTES):
        if method == "POST":
            r = httpx.post(url + path, headers=head, json={"changes": {"thr.threshold": 9.0}} if path == "/api/params" else None)
            assert r.status_code == 403 and "observer" in _one_line_error(r)
            assert hub.refusals[-1][0] == "observer" and "watcher" in hub.refusals[-1][2]
    assert len(hub.requests) == before
    assert hub.status()["api"]["refused"]["observer"] >= 10


def test_authentication_comes_before_the_body(served):
    hub, _, url = served
    r = httpx.post(url + "/api/params", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 401
    r = httpx.post(url + "/api/params", content=b"{not json",
                   headers={"Content-Type": "application/json", "Authorization": f"Bearer {OBSERVER}"})
    assert r.status_code == 403
    r = httpx.get(url + "/api/nowhere")
    assert r.status_code == 401


def test_a_revoked_token_is_refused_at_once(tmp_path):
    token = create_token(tmp_path / "tokens", "alice", "steer")
    hub = FakeHub()
    with ControlServer(hub, TokenAuth(tmp_path / "tokens")) as srv:
        assert srv.url is not None
        c = Client(srv.url, token)
        assert c.set({"thr.threshold": 1.0})["status"] == "applied"
        assert hub.requests[-1][2] == "alice"  # recorded under the token's name
        from rtneuro.control.auth import revoke_token

        revoke_token(tmp_path / "tokens", "alice")
        with pytest.raises(ControlError) as exc:
            c.status()
        assert exc.value.status == 401
        c.close()


# -- malformed bodies -------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "status", "words"), [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (b'"changes"', 400, "must be a JSON object"),
    (b"{}", 400, "'changes' is missing"),
    (b'{"changes": []}', 400, "'changes'"),
    (b'{"changes": {}}', 422, "'changes'"),
    (b'{"changes": {"thr.threshold": 1}, "wait": 2}', 400, "'wait' is not known"),
    (b'{"chnages": {"thr.threshold": 1}}', 400, "did you mean 'changes'"),
    (b"[" * 5000 + b"]" * 5000, 400, "JSON"),
    (b'{"changes": {"thr.threshold": NaN}}', 400, "not a JSON number"),
    (b'{"changes": {"bp.band": [8, -Infinity]}}', 400, "not a JSON number"),
    (b"\xff\xfe\x00", 400, "JSON"),
    (b"", 400, "needs a JSON body"),
])
def test_malformed_params_bodies_are_one_line_4xx_and_never_reach_the_hub(api, body, status, words):
    hub, _, http = api
    r = http.post("/api/params", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    line = _one_line_error(r)
    assert words in line and "send e.g." in line
    assert hub.requests == [] and hub.refusals[-1][0] == "malformed"


def test_a_body_without_a_json_content_type_says_so(api):
    hub, _, http = api
    r = http.post("/api/params", content=b'{"changes": {"thr.threshold": 1.0}}', headers={"Content-Type": "text/plain"})
    assert r.status_code == 400 and "Content-Type: application/json" in _one_line_error(r)


@pytest.mark.parametrize(("path", "body", "status", "words"), [
    ("/api/annotations", {"text": ""}, 422, "'text'"),
    ("/api/annotations", {"text": "x" * 501}, 422, "at most 500"),
    ("/api/annotations", {"text": 5}, 400, "not a number"),
    ("/api/stimulation/disarm", {"reason": "r" * 201}, 422, "'reason'"),
    ("/api/stimulation/arm", {"why": "ready"}, 400, "'why' is not known"),
    ("/api/recording/start", {"label": ["a"]}, 400, "'label'"),
])
def test_malformed_action_bodies(api, path, body, status, words):
    hub, _, http = api
    r = http.post(path, json=body)
    assert r.status_code == status and words in _one_line_error(r)
    assert hub.requests == []


@pytest.mark.parametrize(("query", "words"), [("wait_s=abc", "'wait_s'"), ("wait_s=-1", "'wait_s'"), ("wait_s=11", "'wait_s'")])
def test_malformed_query_parameters(api, query, words):
    hub, _, http = api
    r = http.post(f"/api/params?{query}", json={"changes": {"thr.threshold": 1.0}})
    assert r.status_code in (400, 422) and words in _one_line_error(r)
    assert hub.requests == []
    assert http.get("/api/changes?since=x").status_code == 400


def test_bodies_over_64_kib_are_refused_unread(api):
    hub, _, http = api
    big = json.dumps({"changes": {"thr.threshold": 1.0}, "pad": "x" * MAX_BODY}).encode()
    r = http.post("/api/params", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "over the limit" in _one_line_error(r)

    def chunks():  # no Content-Length: counted as it streams in
        for _ in range(4):
            yield b" " * (MAX_BODY // 2)

    r = http.post("/api/params", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "over the limit" in _one_line_error(r)
    assert hub.requests == [] and [x[0] for x in hub.refusals] == ["too_large", "too_large"]
    r = http.post("/api/params", json={"changes": {"thr.threshold": 1.0}})  # the server goes on
    assert r.status_code == 200


_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
_json = st.recursive(_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
                     max_leaves=12)
_envelopes = (_json
              | st.fixed_dictionaries({"changes": _json})
              | st.fixed_dictionaries({"changes": st.dictionaries(st.sampled_from(["thr.threshold", "thr.enabled",
                                                                                    "bp.band", "thr", "x.y", ""]),
                                                                   _json, max_size=3)},
                                      optional={"extra": _json}))


def _check_fuzz_answer(hub: FakeHub, r: httpx.Response) -> None:
    assert r.status_code != 500, r.text
    if r.status_code >= 400:
        assert 400 <= r.status_code < 500
        _one_line_error(r)
    for op, args, _, _ in hub.requests:  # what reached the hub is a well-formed envelope
        assert op == "set" and set(args) == {"changes"}
        assert isinstance(args["changes"], dict) and 1 <= len(args["changes"]) <= 256
        assert all(isinstance(k, str) for k in args["changes"])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_envelopes)
def test_generated_json_bodies_get_a_4xx_line_or_a_valid_answer(api, body):
    hub, _, http = api
    hub.requests.clear()
    r = http.post("/api/params", json=body)
    _check_fuzz_answer(hub, r)
    if not (isinstance(body, dict) and set(body) == {"changes"} and isinstance(body["changes"], dict) and body["changes"]):
        assert r.status_code in (400, 422) and hub.requests == []


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode),
       ctype=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", None]))
def test_generated_raw_bodies_never_500(api, raw, ctype):
    hub, _, http = api
    hub.requests.clear()
    headers = {"Content-Type": ctype} if ctype else {}
    r = http.post("/api/params", content=raw, headers=headers)
    _check_fuzz_answer(hub, r)


# -- OpenAPI ----------------------------------------------------------------------------------

def test_the_openapi_schema_lists_every_route_and_body():
    schema = openapi_schema()
    listed = {(m.upper(), p) for p, ops in schema["paths"].items() for m in ops}
    assert listed == ROUTES
    comps = schema["components"]["schemas"]
    assert {"ParamsChange", "Annotation", "Reason", "Segment", "ErrorBody", "SetResult", "StatusInfo", "GraphInfo"} <= set(comps)
    assert comps["Annotation"]["properties"]["text"]["maxLength"] == 500
    params = schema["paths"]["/api/params"]["post"]
    assert params["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ParamsChange")
    assert {"200", "202", "401", "403", "404", "409", "422", "503"} <= set(params["responses"])
    assert schema["security"] == [{"bearer": []}]
    md = api_markdown(schema)
    for _, path in ROUTES:
        assert f"`{path}`" in md
    assert "`/api/ws`" in md


def test_the_served_schema_needs_a_token(api, served):
    _, _, http = api
    assert http.get("/api/openapi.json").json()["paths"].keys() == openapi_schema()["paths"].keys()
    assert httpx.get(served[2] + "/api/openapi.json").status_code == 401
    assert httpx.get(served[2] + "/docs").status_code == 401  # no Swagger UI (no CDN): a 404 after the token
    assert http.get("/docs").status_code == 404


# -- WebSocket ---------------------------------------------------------------------------------

def test_websocket_hello_ping_events_and_end(served):
    hub, _, url = served
    c = Client(url, STEER)
    events = c.events()
    hello = next(events)
    assert hello == {"type": "hello", "name": "local", "role": "steer", "graph": "fake"}
    sub = hub.subs[-1]
    sub.q.put({"type": "status", "state": "running"})
    sub.q.put({"type": "dropped", "count": 3})
    sub.q.put({"type": "change", "record": {"seq": 1, "value": float("inf")}})
    sub.q.put({"type": "end", "exit_code": 0})
    rest = list(events)  # ends when the server closes after "end"
    assert [e["type"] for e in rest] == ["status", "dropped", "change", "end"]
    assert rest[2]["record"]["value"] == "inf"
    _until(sub.closed_evt.is_set, "the subscription's close")
    c.close()


def test_websocket_ping_pong_and_client_messages_ignored(served):
    from websockets.sync.client import connect

    hub, _, url = served
    ws_url = url.replace("http://", "ws://") + "/api/ws"
    with connect(ws_url + f"?token={OBSERVER}") as ws:
        assert json.loads(ws.recv())["role"] == "observer"
        ws.send("not json")
        ws.send(json.dumps({"type": "set", "changes": {"thr.threshold": 0.0}}))
        ws.send(json.dumps({"type": "ping"}))
        assert json.loads(ws.recv()) == {"type": "pong"}
        sub = hub.subs[-1]
    _until(sub.closed_evt.is_set, "the subscription's close after the client left")
    assert hub.params["thr"]["threshold"] != 0.0


def test_websocket_refuses_without_a_valid_token(served):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    hub, _, url = served
    ws_url = url.replace("http://", "ws://") + "/api/ws"
    n = len(hub.subs)
    for extra, reason in (("", "no_token"), ("?token=rtn_wrong", "bad_token")):
        with pytest.raises(InvalidStatus) as exc:
            connect(ws_url + extra)
        assert exc.value.response.status_code == 401
        assert "token" in json.loads(exc.value.response.body)["error"]
        assert hub.refusals[-1][0] == reason
    with pytest.raises(ControlError) as err:
        next(Client(url, "rtn_wrong").events())
    assert err.value.status == 401
    assert len(hub.subs) == n


def test_websocket_clients_are_bounded():
    from websockets.sync.client import connect

    hub = FakeHub()
    with ControlServer(hub, _auth(), max_ws_clients=1) as srv:
        assert srv.url is not None
        first = Client(srv.url, STEER).events()
        assert next(first)["type"] == "hello"
        with pytest.raises(ControlError) as exc:
            next(Client(srv.url, STEER).events())
        assert exc.value.status == 503 and "close one" in str(exc.value)
        first.close()
        _until(hub.subs[0].closed_evt.is_set, "the first client's close")
        with connect(srv.url.replace("http", "ws") + "/api/ws", additional_headers={"Authorization": f"Bearer {STEER}"}) as ws:
            assert json.loads(ws.recv())["type"] == "hello"


# -- the server's life ------------------------------------------------------------------------------

def test_stop_ends_the_thread_with_a_websocket_attached():
    hub = FakeHub()
    srv = ControlServer(hub, _auth())
    url = srv.start()
    events = Client(url, STEER).events()
    assert next(events)["type"] == "hello"
    srv.stop(timeout_s=20)
    assert srv._thread is not None and not srv._thread.is_alive()
    assert list(events) == []  # closed by the server: the generator ends
    with pytest.raises(RtneuroError, match="cannot reach"):
        Client(url, STEER).status()


def test_a_port_in_use_is_an_error_in_the_caller():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(RtneuroError, match="cannot listen on 127.0.0.1"):
            ControlServer(FakeHub(), _auth(), port=port).start()


def test_tls_serves_https_and_wss_to_a_client_trusting_the_certificate(tmp_path):
    cert, key = create_tls(tmp_path / "tls", ["127.0.0.1", "localhost"])
    hub = FakeHub()
    with ControlServer(hub, _auth(), ssl_certfile=str(cert), ssl_keyfile=str(key)) as srv:
        assert srv.url is not None and srv.url.startswith("https://127.0.0.1:")
        assert httpx.get(srv.url + "/api/status", headers={"Authorization": f"Bearer {STEER}"},
                         verify=__import__("ssl").create_default_context(cafile=str(cert))).status_code == 200
        c = Client(srv.url, STEER, verify=str(cert))
        assert c.status()["state"] == "running"
        assert c.set(**{"thr.threshold": 4.0})["values"]["thr"]["threshold"] == 4.0
        events = c.events()
        assert next(events)["type"] == "hello"
        events.close()
        with pytest.raises(RtneuroError, match="--cafile"):
            Client(srv.url, STEER).status()  # the system's authorities do not know a self-signed certificate
        with pytest.raises(httpx.HTTPError):
            httpx.get(srv.url.replace("https://", "http://") + "/api/status")  # no plain HTTP on a TLS port
        c.close()


def test_bad_tls_files_fail_at_start(tmp_path):
    (tmp_path / "c.pem").write_text("not a certificate")
    (tmp_path / "k.pem").write_text("not a key")
    with pytest.raises(RtneuroError, match="tls_cert"):
        ControlServer(FakeHub(), _auth(), ssl_certfile=str(tmp_path / "c.pem"), ssl_keyfile=str(tmp_path / "k.pem")).start()


# -- client ---------------------------------------------------------------------------------

def test_client_methods_map_onto_the_routes(api, served):
    hub, url, _ = api
    with Client(url, STEER) as c:
        assert c.graph()["name"] == "fake" and c.report()["streams"]["x"]["samples"] == 100
        assert c.set({"thr.threshold": 1.5}, wait_s=0.25)["applied"]["thr"]["index"] == 1234
        assert hub.requests[-1][3] == 0.25
        c.annotate("block 2 starts")
        c.disarm("moves")
        c.arm()
        c.estop("now")
        c.estop_clear()
        c.record_stop()
        c.pause()
        c.resume()
        with pytest.raises(ControlError, match="--record DIR") as exc:
            c.record_start("b2")
        assert exc.value.status == 409
        assert [r[0] for r in hub.requests] == ["set", "annotate", "disarm", "arm", "estop", "estop_clear",
                                                "record_stop", "pause", "resume", "record_start"]
        assert hub.requests[2][1] == {"reason": "moves"} and hub.requests[3][1] == {}
        assert c.changes()[-1]["op"] == "record_stop" or c.changes()[-1]["op"] == "resume"
        assert c.openapi()["info"]["title"] == "rtneuro control API"
        with pytest.raises(RtneuroError, match="nothing to set"):
            c.set()


def test_client_find_reads_the_run_registry(served, tmp_path, monkeypatch):
    _, _, url = served
    monkeypatch.setenv("RTNEURO_RUNTIME_DIR", str(tmp_path / "runs"))
    with pytest.raises(RtneuroError, match="no running rtneuro"):
        Client.find()
    runs = _register(tmp_path, url, "a") + _register(tmp_path, url, "b")
    with pytest.raises(RtneuroError, match="2 runs are going: 'a'.*'b'.*--run"):
        Client.find()
    assert Client.find("b").status()["state"] == "running"
    assert Client.find(runs[0]).url == url
    with pytest.raises(RtneuroError, match="--run nope"):
        Client.find("nope")


def _register(tmp_path, url: str, name: str, token: str = STEER) -> list[str]:
    """A registry entry as the supervisor writes it, for this (live) process."""
    from rtneuro.runtime.supervisor import runs_dir

    run_dir = tmp_path / f"rtn-{name}"
    run_dir.mkdir()
    entry = {"pid": os.getpid(), "run_dir": str(run_dir), "control": "ipc://x", "keys": None, "name": name,
             "config": "g.yaml", "started": "now", "api": url, "api_token": token, "api_cafile": None}
    (runs_dir() / f"rtn-{name}.json").write_text(json.dumps(entry))
    (run_dir / "control.json").write_text(json.dumps(entry))
    return [str(run_dir)]


# -- command line ---------------------------------------------------------------------------------

def test_set_values_are_read_as_yaml():
    assert parse_assignments(["thr.threshold=2.5", "x.flag=false", "bp.band=[8, 12]", "d.name=left", "d.rate=1e-3"]) == {
        "thr.threshold": 2.5, "x.flag": False, "bp.band": [8, 12], "d.name": "left", "d.rate": 1e-3}
    for bad in ("threshold=2", "thr.threshold", ".x=1", "bp.band=[8, 12"):
        with pytest.raises(ConfigError):
            parse_assignments([bad])


def _rtneuro(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "rtneuro", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_cli_verbs_against_a_remote_run(served, tmp_path):
    hub, _, url = served
    remote = ("--url", url, "--token", STEER)
    r = _rtneuro("status", *remote, "--params")
    assert r.returncode == 0, r.stderr
    assert "run 'fake': running for 12.5 s; stimulation armed; not paused; not recording" in r.stdout
    assert "sig.x" in r.stdout and "250.00 Hz" in r.stdout and "p50 1.50 ms, p99 3.25 ms" in r.stdout
    assert "thr.threshold = " in r.stdout and "bp.band = [" in r.stdout
    r = _rtneuro("set", "thr.threshold=2.75", "thr.enabled=false", "bp.band=[9.0, 13.0]", *remote)
    assert r.returncode == 0, r.stderr
    assert "applied: thr.threshold = 2.75, thr.enabled = false, bp.band = [9.0, 13.0]" in r.stdout
    assert "thr: from sample 1234 of stream 'x'" in r.stdout
    assert hub.params["thr"] == {"threshold": 2.75, "enabled": False} and hub.params["bp"]["band"] == [9.0, 13.0]
    r = _rtneuro("set", "thr.threshold=high", *remote)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == ["error: node 'thr' parameter 'threshold' must be float"]
    r = _rtneuro("set", "threshold=2", *remote)
    assert r.returncode == 2 and "NODE.PARAM=VALUE" in r.stderr
    r = _rtneuro("disarm", "--reason", "moves", *remote)
    assert r.returncode == 0 and "stimulation disarmed" in r.stdout and "stim ok" in r.stdout
    assert _rtneuro("arm", *remote).stdout.startswith("stimulation armed")
    assert "annotation" in _rtneuro("annotate", "block 2 starts", *remote).stdout
    r = _rtneuro("record", "start", "b2", *remote)
    assert r.returncode == 1 and "--record DIR" in r.stderr
    assert "replay paused" in _rtneuro("pause", *remote).stdout
    r = _rtneuro("changes", *remote)
    assert r.returncode == 0 and " local set thr.threshold=2.75" in r.stdout and " local annotate text=" in r.stdout
    r = _rtneuro("status", "--url", url, "--token", OBSERVER, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["state"] == "running"
    r = _rtneuro("arm", "--url", url, "--token", OBSERVER)
    assert r.returncode == 1 and "observer" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _rtneuro("status", "--url", url)
    assert r.returncode == 2 and "--token" in r.stderr


def test_cli_finds_the_run_of_this_user(served, tmp_path, monkeypatch):
    _, _, url = served
    env = {"RTNEURO_RUNTIME_DIR": str(tmp_path / "runs")}
    r = _rtneuro("status", env=env)
    assert r.returncode == 1 and "no running rtneuro found" in r.stderr
    # a registry entry of a live pid (this test process) with the API of the served fake run
    monkeypatch.setenv("RTNEURO_RUNTIME_DIR", env["RTNEURO_RUNTIME_DIR"])
    _register(tmp_path, url, "mine")
    r = _rtneuro("status", env=env)
    assert r.returncode == 0 and "run 'fake': running" in r.stdout
    r = _rtneuro("set", "thr.threshold=3.5", "--run", "mine", env=env)
    assert r.returncode == 0 and "applied" in r.stdout


def test_keys_makes_tokens_and_tls(tmp_path):
    d = tmp_path / "tokens"
    r = _rtneuro("keys", str(d), "--token", "alice", "--role", "observer")
    assert r.returncode == 0, r.stderr
    assert (d / "alice.token").stat().st_mode & 0o077 == 0
    r = _rtneuro("keys", str(d), "--token", "alice", "--role", "steer")
    assert r.returncode == 2 and "--force" in r.stderr
    r = _rtneuro("keys", str(d), "--token", "bob")
    assert r.returncode == 2 and "--role" in r.stderr
    r = _rtneuro("keys", str(d), "--list")
    assert r.returncode == 0 and "alice" in r.stdout and "observer" in r.stdout
    r = _rtneuro("keys", str(d), "--revoke", "alice")
    assert r.returncode == 0 and not (d / "alice.token").exists()
    r = _rtneuro("keys", str(tmp_path / "tls"), "--tls", "127.0.0.1", "localhost")
    assert r.returncode == 0 and "--cafile" in r.stdout
    assert (tmp_path / "tls" / "tls_cert.pem").exists()
    r = _rtneuro("keys", str(tmp_path / "curve"))  # neither flag: the CURVE keypair, as before
    assert r.returncode == 0 and "transport: {scheme: tcp" in r.stdout


def test_cli_token_from_a_file(served, tmp_path):
    hub, _, url = served
    token = create_token(tmp_path / "tokens", "carol", "steer")
    r = _rtneuro("annotate", "from carol", "--url", url, "--token", str(tmp_path / "tokens" / "carol.token"))
    assert r.returncode == 1 and "unknown or revoked token" in r.stderr  # this server does not know carol
    assert token.startswith("rtn_")


# -- against a live graph (the supervisor's hub, real processes) ----------------------------------------

def _start_run(tmp_path, graph: dict, *args: str):
    """``rtneuro run`` in a subprocess with its own runs folder; (process, registry entry, env) once its API answers."""
    import yaml

    path = tmp_path / "graph.yaml"
    path.write_text(yaml.safe_dump(graph, sort_keys=False))
    env = {**os.environ, "RTNEURO_RUNTIME_DIR": str(tmp_path / "runs")}
    proc = subprocess.Popen([sys.executable, "-m", "rtneuro", "run", str(path), "--quiet", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    entry: dict = {}

    def registered() -> bool:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        for f in (tmp_path / "runs").glob("rtn-*.json"):
            try:
                e = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            if e.get("api") and e.get("pid") == proc.pid:
                entry.update(e)
                return True
        return False

    try:
        _until(registered, "the run's registry entry with its API", 120)
        with Client(entry["api"], entry["api_token"]) as c:
            _until(lambda: c.status()["state"] == "running", "the run's start", 120)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, entry, env


def _end_run(proc) -> str:
    import signal

    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("live")
    proc, entry, env = _start_run(tmp_path, synthetic_chain(speed="realtime", duration_s=900.0))
    c = Client(entry["api"], entry["api_token"], timeout=30)
    yield c, proc, entry, env
    c.close()
    _end_run(proc)


def _live_value(c: Client, key: str):
    node, param = key.split(".")
    return c.graph()["nodes"][node]["live"][param]["value"]


@pytest.mark.slow
@pytest.mark.xdist_group("control_live")
def test_live_change_is_applied_at_a_sample_and_recorded(live):
    c, _, _, _ = live
    res = c.set({"ctl.threshold": 5.5}, wait_s=10)
    assert res["status"] == "applied", res
    at = res["applied"]["ctl"]
    assert at["stream"] == "bpow" and isinstance(at["index"], int) and at["index"] >= 0
    assert res["values"]["ctl"]["threshold"] == 5.5
    _until(lambda: _live_value(c, "ctl.threshold") == 5.5, "the new value in the graph")  # a snapshot per status interval
    rec = c.changes()[-1]
    assert rec["op"] == "set" and rec["who"] == "local" and rec["applied"]["ctl"]["index"] == at["index"]


@pytest.mark.slow
@pytest.mark.xdist_group("control_live")
def test_live_bad_changes_are_4xx_lines_and_change_nothing(live):
    c, _, _, _ = live
    c.set({"ctl.threshold": 3.0, "stim.max_amplitude_ma": 2.0}, wait_s=10)  # None -> 2 mA: stricter
    n = len(c.changes())
    for changes, status, words in (
        ({"nope.threshold": 1.0}, 404, "no node 'nope'"),
        ({"ctl.treshold": 1.0}, 404, "did you mean 'threshold'"),
        ({"bp.order": 2}, 409, "cannot change while running"),
        ({"ctl.threshold": "high"}, 422, "must be a number"),
        ({"ctl.hysteresis": -1.0}, 422, "hysteresis"),
        ({"stim.max_amplitude_ma": 5.0}, 422, "stricter"),
        ({"ctl.threshold": 7.0, "ctl.hysteresis": -1.0}, 422, "hysteresis"),  # all or none
    ):
        with pytest.raises(ControlError) as exc:
            c.set(changes, wait_s=10)
        assert exc.value.status == status and words in str(exc.value), (changes, exc.value.status, str(exc.value))
        assert "\n" not in str(exc.value)
    assert len(c.changes()) == n
    _until(lambda: _live_value(c, "stim.max_amplitude_ma") == 2.0, "the stricter limit in the graph")
    assert _live_value(c, "ctl.threshold") == 3.0 and _live_value(c, "ctl.hysteresis") >= 0
    st = c.status()
    assert st["state"] == "running" and st["errors"] == 0


@pytest.mark.slow
@pytest.mark.xdist_group("control_live")
def test_live_actions(live):
    c, _, _, _ = live
    d = c.disarm("participant moves")
    assert d["armed"] is False and d["stimulators"] == {"stim": "ok"}
    _until(lambda: c.status()["stimulation"]["armed"] is False, "disarmed in the status")  # a snapshot per interval
    a = c.arm("ready")
    assert a["armed"] is True
    _until(lambda: c.status()["stimulation"]["armed"] is True, "armed in the status")
    ann = c.annotate("block 2 starts")
    assert isinstance(ann["id"], int) and isinstance(ann["t_lsl"], float)
    assert c.pause()["paused"] is True
    _until(lambda: c.status()["paused"] is True, "paused in the status")
    assert c.resume()["paused"] is False
    with pytest.raises(ControlError, match="--record DIR") as exc:
        c.record_start("b2")
    assert exc.value.status == 409
    ops = [r["op"] for r in c.changes()[-5:]]
    assert ops == ["disarm", "arm", "annotate", "pause", "resume"]


@pytest.mark.slow
@pytest.mark.xdist_group("control_live")
def test_live_websocket_pushes_status_and_changes(live):
    c, _, _, _ = live
    events = c.events()
    assert next(events)["type"] == "hello"
    seen: set[str] = set()
    for ev in events:
        seen.add(ev["type"])
        if ev["type"] == "status" and "change" not in seen:
            c.set({"ctl.min_hold_s": 0.25}, wait_s=10)
        if ev["type"] == "change":
            assert ev["record"]["op"] == "set" and ev["record"]["args"]["changes"] == {"ctl.min_hold_s": 0.25}
            break
    events.close()
    assert {"status", "change"} <= seen


@pytest.mark.slow
@pytest.mark.xdist_group("control_live")
def test_live_cli_finds_and_steers_the_run(live):
    c, _, entry, env = live
    r = _rtneuro("set", "ctl.threshold=4.25", "bp.l_freq=2", env=env)
    assert r.returncode == 0, r.stderr
    assert "applied: ctl.threshold = 4.25, bp.l_freq = 2" in r.stdout and "ctl: from sample " in r.stdout
    _until(lambda: _live_value(c, "bp.l_freq") == 2.0, "the new value in the graph")  # a snapshot per status interval
    r = _rtneuro("status", "--params", "--run", entry["run_dir"], env=env)
    assert r.returncode == 0 and "run 'test-chain': running" in r.stdout and "ctl.threshold = 4.25" in r.stdout
    r = _rtneuro("set", "bp.order=2", env=env)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "live: l_freq, h_freq" in r.stderr


@pytest.mark.slow
@pytest.mark.xdist_group("control_live")
@settings(max_examples=40, deadline=None)
@given(body=st.fixed_dictionaries({"changes": st.dictionaries(
    st.sampled_from(["ctl.threshold", "ctl.hysteresis", "ctl.min_hold_s", "ctl.gate_action", "bp.l_freq", "bp.h_freq",
                     "bp.order", "stim.max_amplitude_ma", "nope.x", "ctl", "ctl.", ".x"]), _json, max_size=3)})
       | _envelopes)
def test_live_generated_bodies_never_disturb_the_graph(live, body):
    c, _, _, _ = live
    n = len(c.changes())
    r = httpx.post(c.url + "/api/params", json=body, params={"wait_s": 10},
                   headers={"Authorization": f"Bearer {c.token}"}, timeout=60)
    assert r.status_code != 500, r.text
    if r.status_code >= 400:
        assert 400 <= r.status_code < 500
        _one_line_error(r)
        assert len(c.changes()) == n  # nothing applied, nothing recorded
    st_ = c.status()
    assert st_["state"] == "running" and st_["errors"] == 0


@pytest.mark.slow
@pytest.mark.xdist_group("control_live")
def test_live_refusals_are_counted_by_the_hub(live):
    c, _, _, _ = live
    n = c.status()["api"]["refused"].get("bad_token", 0)
    r = httpx.get(c.url + "/api/status", headers={"Authorization": "Bearer rtn_guess"})
    assert r.status_code == 401
    assert c.status()["api"]["refused"]["bad_token"] == n + 1


@pytest.mark.slow
def test_the_end_of_a_run_ends_the_websocket(tmp_path):
    proc, entry, env = _start_run(tmp_path, synthetic_chain(speed="realtime", duration_s=600.0))
    c = Client(entry["api"], entry["api_token"])
    events = c.events()
    assert next(events)["type"] == "hello"
    _end_run(proc)
    rest = list(events)  # ends when the server closes
    assert rest and rest[-1] == {"type": "end", "exit_code": rest[-1]["exit_code"]}
    assert proc.returncode == 0
    r = _rtneuro("status", env=env)
    assert r.returncode == 1 and "no running rtneuro found" in r.stderr
