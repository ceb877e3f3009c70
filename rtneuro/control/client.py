"""A client of the control API, for the command line and for scripts.

>>> from rtneuro.control.client import Client
>>> api = Client.find()                       # the one run of this user on this machine
>>> api.set(**{"thr.threshold": 2.5})         # {'id': 3, 'status': 'applied', 'applied': {'thr': {...}}, ...}
>>> api.annotate("block 2 starts")
>>> api.disarm("participant moves"); api.arm("ready")
>>> for event in api.events():                # hello, then status, decisions, change, ..., end
...     print(event["type"])

A remote run: ``Client("https://rig-2:8765", token, verify="tls_cert.pem")``.
Every refusal raises :class:`~rtneuro.control.live.ControlError` with the
server's one-line message and its HTTP ``status``; a run that cannot be
reached raises :class:`~rtneuro.errors.RtneuroError`.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from ..errors import RtneuroError
from .live import ControlError

__all__ = ["Client", "find_run"]

_CLOSED_AT_END = (1000, 1001, 1012)  # normal, going away, service restart (the run stopped)


def _describe(entry: dict) -> str:
    return f"'{entry.get('name', '?')}' (pid {entry.get('pid', '?')}, {entry.get('run_dir', '?')})"


def find_run(run: str | None = None) -> dict:
    """The registry entry of a running supervisor with a control API.

    Parameters
    ----------
    run : str or None
        The run folder ``rtneuro run`` printed (or its ``control.json``), the
        graph's name, or the supervisor's pid; None: the only run of this
        user.

    Returns
    -------
    dict
        The entry: ``api`` (base URL), ``api_token``, ``api_cafile`` (or
        None), ``name``, ``pid``, ``run_dir``, ...

    Raises
    ------
    RtneuroError
        No run, no run matching ``run``, several runs and no ``run``, or a run
        without a control API; one line naming the fix.
    """
    from ..runtime.supervisor import running_supervisors

    entries = running_supervisors()
    if run is not None:
        p = Path(run).expanduser()
        key = str(p.resolve()) if p.exists() else None
        matches = [e for e in entries if run in (e.get("name"), str(e.get("pid")), e.get("run_dir"))
                   or (key is not None and key in (str(Path(str(e.get("run_dir"))).resolve()),
                                                   str((Path(str(e.get("run_dir"))) / "control.json").resolve())))]
        if not matches and p.exists():
            f = p / "control.json" if p.is_dir() else p
            try:
                matches = [json.loads(f.read_text())]
            except (OSError, ValueError) as exc:
                raise RtneuroError(f"--run {run}: no running rtneuro there ({exc.__class__.__name__}); "
                                   "pass the run folder 'rtneuro run' printed, the graph's name or the pid") from None
        if not matches:
            known = ", ".join(_describe(e) for e in entries) or "none"
            raise RtneuroError(f"--run {run}: no running rtneuro of that folder, name or pid (running: {known})")
        if len(matches) > 1:
            raise RtneuroError(f"--run {run} matches {len(matches)} runs: {', '.join(_describe(e) for e in matches)}; "
                               "pass the run folder instead")
        entries = matches
    if not entries:
        raise RtneuroError("no running rtneuro found: start one with 'rtneuro run CONFIG', or reach a remote one with "
                           "--url URL --token TOKEN")
    if len(entries) > 1:
        raise RtneuroError(f"{len(entries)} runs are going: {', '.join(_describe(e) for e in entries)}; "
                           "pick one with --run RUN_FOLDER (or its name or pid)")
    entry = entries[0]
    if not entry.get("api") or not entry.get("api_token"):
        raise RtneuroError(f"run {_describe(entry)} has no control API (its graph sets control.enabled: false, or it "
                           "is an older rtneuro); stop it with 'rtneuro stop --now' if needed")
    return entry


def _ssl_context(verify: bool | str | Path) -> ssl.SSLContext:
    if verify is True:
        return ssl.create_default_context()
    if verify is False:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    cafile = Path(verify).expanduser()
    try:
        return ssl.create_default_context(cafile=str(cafile))
    except (OSError, ssl.SSLError) as exc:
        raise RtneuroError(f"--cafile {cafile} cannot be loaded ({exc}); give the server's tls_cert.pem "
                           "(made by 'rtneuro keys DIR --tls HOST')") from None


def _error_line(body: bytes | bytearray | str, status: int) -> str:
    try:
        obj = json.loads(body)
        if isinstance(obj, dict) and isinstance(obj.get("error"), str):
            return obj["error"]
    except (ValueError, TypeError):
        pass
    text = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else str(body)
    return " ".join(text.split())[:300] or f"HTTP {status}"


class Client:
    """The control API of one run, over HTTP(S) and WebSocket.

    Parameters
    ----------
    url : str
        Base URL, e.g. ``http://127.0.0.1:40123`` (a run's registry entry
        holds it) or ``https://rig-2:8765``.
    token : str
        ``Authorization: Bearer`` token: the run's own, or one made by
        ``rtneuro keys DIR --token NAME``.
    verify : bool or str or Path
        TLS: True checks against the system's certificate authorities; a
        path trusts that certificate file (the run's ``tls_cert.pem``);
        False checks nothing (tests only).
    timeout : float
        Seconds to wait for an answer (a parameter change waits ``wait_s``
        more).
    """

    def __init__(self, url: str, token: str, verify: bool | str | Path = True, timeout: float = 5.0) -> None:
        url = url.rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise RtneuroError(f"control API URL {url!r} must start with http:// or https://, e.g. http://127.0.0.1:40123")
        if not token:
            raise RtneuroError("no token for the control API; pass --token TOKEN (or a file of 'rtneuro keys DIR --token NAME')")
        self.url, self.token, self.timeout = url, token, float(timeout)
        self._ssl = _ssl_context(verify) if url.startswith("https://") else None
        self._http = httpx.Client(base_url=url, timeout=self.timeout, verify=self._ssl if self._ssl is not None else True,
                                  headers={"Authorization": f"Bearer {token}"}, trust_env=False)

    @classmethod
    def find(cls, run: str | None = None, timeout: float = 5.0) -> Client:
        """The client of a run of this user on this machine, from its registry entry (:func:`find_run`)."""
        entry = find_run(run)
        return cls(entry["api"], entry["api_token"], verify=entry.get("api_cafile") or True, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # -- plumbing --

    def _call(self, method: str, path: str, body: Any = None, params: dict | None = None,
              timeout: float | None = None) -> Any:
        kwargs: dict[str, Any] = {"params": params}
        if body is not None:
            kwargs["json"] = body
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            r = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise RtneuroError(f"the control API at {self.url} did not answer {method} {path} within "
                               f"{timeout or self.timeout:g} s; check the run ('rtneuro status') or raise --timeout") from None
        except httpx.HTTPError as exc:
            why = str(exc) or type(exc).__name__
            if "CERTIFICATE_VERIFY_FAILED" in why or "certificate" in why.lower():
                raise RtneuroError(f"the control API at {self.url} has a certificate this client does not trust ({why}); "
                                   "pass --cafile with the run's tls_cert.pem") from None
            raise RtneuroError(f"cannot reach the control API at {self.url} ({type(exc).__name__}: {why}); "
                               "is the run still going? ('rtneuro status' lists the runs of this user)") from None
        if r.status_code >= 400:
            raise ControlError(_error_line(r.content, r.status_code), r.status_code)
        try:
            return r.json()
        except ValueError:
            raise RtneuroError(f"the control API at {self.url} answered {method} {path} with something that is not "
                               "JSON; is that URL an rtneuro run?") from None

    def _post(self, path: str, body: Any = None, **kw: Any) -> dict:
        out: dict = self._call("POST", path, body, **kw)
        return out

    # -- reading --

    def graph(self) -> dict:
        """Processes, nodes (with each live parameter's type, range and value) and streams."""
        out: dict = self._call("GET", "/api/graph")
        return out

    def status(self) -> dict:
        """State, per-stream rate/gaps/latency, stimulation, pause, recording, API counters."""
        out: dict = self._call("GET", "/api/status")
        return out

    def report(self) -> dict:
        """The run report so far."""
        out: dict = self._call("GET", "/api/report")
        return out

    def changes(self, since: int = 0) -> list[dict]:
        """The accepted changes and actions with ``seq > since`` (the ctl records), oldest first."""
        out: list[dict] = self._call("GET", "/api/changes", params={"since": int(since)})["changes"]
        return out

    def openapi(self) -> dict:
        """The server's OpenAPI schema."""
        out: dict = self._call("GET", "/api/openapi.json")
        return out

    # -- steering --

    def set(self, changes: dict[str, Any] | None = None, /, *, wait_s: float | None = None, **kw: Any) -> dict:
        """Change live parameters together (all or none): ``set({"thr.threshold": 2.5})`` or ``set(**{"thr.threshold": 2.5})``.

        Parameters
        ----------
        changes : dict, optional
            ``{"NODE.PARAM": value}``; keyword arguments add to it.
        wait_s : float, optional
            Seconds the server waits for the change to take effect (default
            2); the answer's ``status`` is ``"pending"`` when it did not.

        Returns
        -------
        dict
            ``{"id", "status": "applied"|"pending", "applied": {node: {"stream", "index", "t_lsl", "t_stream"}},
            "values": {node: {param: value}}}``.
        """
        merged = {**(changes or {}), **kw}
        if not merged:
            raise RtneuroError("nothing to set: give NODE.PARAM=VALUE changes")
        params = None if wait_s is None else {"wait_s": wait_s}
        return self._post("/api/params", {"changes": merged}, params=params,
                          timeout=None if wait_s is None else self.timeout + float(wait_s))

    def annotate(self, text: str) -> dict:
        """Stamp free text on the LSL clock (recorded in the session)."""
        return self._post("/api/annotations", {"text": text})

    @staticmethod
    def _reason(reason: str | None) -> dict | None:
        return None if reason is None else {"reason": reason}

    def arm(self, reason: str | None = None) -> dict:
        """Arm stimulation."""
        return self._post("/api/stimulation/arm", self._reason(reason))

    def disarm(self, reason: str | None = None) -> dict:
        """Disarm stimulation: stimulators ramp to their safe state and refuse commands until armed."""
        return self._post("/api/stimulation/disarm", self._reason(reason))

    def estop(self, reason: str | None = None) -> dict:
        """Emergency stop, latched until :meth:`estop_clear`."""
        return self._post("/api/stimulation/estop", self._reason(reason))

    def estop_clear(self, reason: str | None = None) -> dict:
        """Release the latched emergency stop."""
        return self._post("/api/stimulation/estop/clear", self._reason(reason))

    def record_start(self, label: str | None = None) -> dict:
        """Start a recording segment (the run records with ``--record DIR``)."""
        return self._post("/api/recording/start", None if label is None else {"label": label})

    def record_stop(self) -> dict:
        """Stop the recording segment."""
        return self._post("/api/recording/stop")

    def pause(self) -> dict:
        """Pause the replayed sources."""
        return self._post("/api/replay/pause")

    def resume(self) -> dict:
        """Resume the replayed sources."""
        return self._post("/api/replay/resume")

    # -- push events --

    def events(self) -> Iterator[dict]:
        """The WebSocket's events: first ``{"type": "hello", "name", "role"}``, then status, decisions, change, ..., end.

        The generator ends when the run ends (the server closes the socket);
        closing the generator closes the socket.

        Raises
        ------
        ControlError
            The server refused the WebSocket (401, 403, 503).
        RtneuroError
            The server cannot be reached, or the connection broke.
        """
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
        from websockets.sync.client import connect

        ws_url = "ws" + self.url[len("http"):] + "/api/ws"
        try:
            conn = connect(ws_url, additional_headers={"Authorization": f"Bearer {self.token}"}, ssl=self._ssl,
                           open_timeout=self.timeout, max_size=16 * 1024 * 1024)
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise ControlError(_error_line(exc.response.body or b"", status), status) from None
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise RtneuroError(f"cannot open the WebSocket of {self.url} ({type(exc).__name__}: {exc}); "
                               "is the run still going?") from None
        with conn:
            while True:
                try:
                    text = conn.recv()
                except ConnectionClosed as exc:
                    code = exc.rcvd.code if exc.rcvd is not None else None
                    if code in _CLOSED_AT_END:
                        return
                    raise RtneuroError(f"the WebSocket of {self.url} closed ({code}: "
                                       f"{exc.rcvd.reason if exc.rcvd is not None else 'no close frame'})") from None
                yield json.loads(text)
