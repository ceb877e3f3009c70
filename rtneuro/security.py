"""Who may talk to a running graph: CURVE keys for tcp, file modes for ipc.

Threat model
    A stimulation command, an emergency-stop clear or a ``stop`` that reaches
    a running graph acts on a person. Only the deployment's own processes
    and its operators may send them.

ipc (one host)
    Socket files live in the supervisor's run folder, created ``0700``; each
    socket file is made ``0600`` right after it is bound. Only the user who
    started the run (and root) can connect.

tcp (across hosts)
    Every bound socket (command ``ROUTER``, data ``XPUB``, the supervisor's
    control ``ROUTER``) is a ZeroMQ CURVE server (CurveZMQ: Curve25519 key
    exchange, encrypted and authenticated frames) and every connecting
    socket a CURVE client. A ZAP handler (one authenticator thread per
    process) accepts only the client public keys listed in the keys
    directory's ``authorized`` file and logs every refusal. A client that
    does not speak CURVE at all (or speaks it with the wrong server key) is
    dropped by libzmq during the handshake; a monitor on every CURVE server
    socket sees the failed handshake, and it is counted and logged as well.

Keys directory (``rtneuro keys DIR``)
    ``rtneuro.key``
        This deployment's public key (z85, 40 characters).
    ``rtneuro.key_secret``
        Its secret key (z85), mode ``0600``; refused if group or others can
        read it.
    ``authorized``
        Public keys allowed to connect, one per line (``KEY  comment``;
        lines starting with ``#`` are comments). ``rtneuro keys`` lists the deployment key.

    One keypair per deployment: copy the folder (``scp -rp``, keeping the
    modes) to every host of the deployment, then name it in the graph as
    ``transport: {scheme: tcp, keys: DIR}``. Servers present this keypair;
    clients present it too and expect it from the servers. To let another
    client in (an operator's machine with its own ``rtneuro keys``), add
    its public key to the deployment's ``authorized`` and copy the
    deployment's ``rtneuro.key`` into the operator's folder as
    ``server.key`` (the key its clients then expect from the servers).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import os
import socket
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import zmq
from zmq.utils import z85

from .errors import ConfigError, RtneuroError
from .ratelog import RateLog

__all__ = [
    "PUBLIC_FILE",
    "SERVER_FILE",
    "SECRET_FILE",
    "AUTHORIZED_FILE",
    "Keys",
    "create_keys",
    "load_keys",
    "keys_problem",
    "curve_server",
    "curve_client",
    "release_server",
    "stop_authenticator",
    "refusals",
    "security_stats",
    "REFUSAL_REASONS",
    "secure_ipc",
    "private_dir",
    "is_loopback",
]

log = logging.getLogger(__name__)
#: Every refusal is logged through this, by reason: a scanner costs a bounded number of lines.
_ratelog = RateLog(log)
#: Why a client was refused: an unknown public key (the ZAP handler), no CURVE at all, a wrong
#: server key (its HELLO does not decrypt), another handshake failure (the socket's monitor).
REFUSAL_REASONS = ("unknown_key", "no_curve", "wrong_server_key", "handshake")

PUBLIC_FILE = "rtneuro.key"
#: optional: the public key of the servers, when this folder's keypair is a client's own
SERVER_FILE = "server.key"
SECRET_FILE = "rtneuro.key_secret"
AUTHORIZED_FILE = "authorized"
_Z85_KEY_LEN = 40


@dataclass(frozen=True, slots=True)
class Keys:
    """A deployment's CURVE keypair and the client keys it accepts.

    Parameters
    ----------
    directory : Path
        The keys directory.
    public, secret : bytes
        z85-encoded Curve25519 keys (40 bytes each).
    authorized : frozenset of bytes
        z85 public keys of the clients allowed to connect.
    server : bytes
        z85 public key clients expect from servers: ``server.key`` if the
        folder has one (an operator's own keypair), else ``public``.
    """

    directory: Path
    public: bytes
    secret: bytes
    authorized: frozenset
    server: bytes

    @property
    def domain(self) -> str:
        """ZAP domain of the servers using these keys (one per keys directory)."""
        return "rtneuro-" + hashlib.sha1(str(self.directory).encode()).hexdigest()[:16]


def _z85_key(text: str, where: Path) -> bytes:
    key = text.strip().split()[0] if text.strip() else ""
    if len(key) != _Z85_KEY_LEN:
        raise ConfigError(f"{where}: not a z85 CURVE key (expected {_Z85_KEY_LEN} characters); recreate it with 'rtneuro keys DIR --force'")
    try:
        z85.decode(key.encode("ascii"))
    except Exception:
        raise ConfigError(f"{where}: not a z85 CURVE key; recreate it with 'rtneuro keys DIR --force'") from None
    return key.encode("ascii")


def _read_authorized(path: Path) -> frozenset:
    keys = set()
    for n, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if text and not text.startswith("#"):  # a whole-line comment ('#' is also a z85 character)
            keys.add(_z85_key(text, Path(f"{path}:{n}")))
    return frozenset(keys)


def create_keys(directory: str | Path, *, force: bool = False, comment: str | None = None) -> Keys:
    """Create a deployment keypair and its ``authorized`` list in ``directory``.

    Parameters
    ----------
    directory : str or Path
        Created with mode ``0700`` if missing.
    force : bool
        Replace an existing keypair (clients holding the old one are then
        refused until they get the new folder).
    comment : str or None
        Written after the key in ``authorized`` (default ``user@host date``).

    Returns
    -------
    Keys

    Raises
    ------
    ConfigError
        If a keypair exists already and ``force`` is False.
    """
    d = Path(directory).expanduser().resolve()
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    pub_path, sec_path, auth_path = d / PUBLIC_FILE, d / SECRET_FILE, d / AUTHORIZED_FILE
    if (pub_path.exists() or sec_path.exists()) and not force:
        raise ConfigError(f"{d} already holds a keypair; use it, or replace it with 'rtneuro keys {d} --force'")
    public, secret = zmq.curve_keypair()
    for p in (pub_path, sec_path):
        p.unlink(missing_ok=True)
    # the secret is created 0600 from the start: never readable by others, not even briefly
    fd = os.open(sec_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret.decode("ascii") + "\n")
    os.chmod(sec_path, 0o600)  # whatever the umask
    pub_path.write_text(public.decode("ascii") + "\n")
    os.chmod(pub_path, 0o644)
    if comment is None:
        user = os.environ.get("USER") or str(os.getuid())
        comment = f"{user}@{socket.gethostname()} {datetime.date.today().isoformat()}"
    lines = auth_path.read_text().splitlines() if auth_path.exists() else [
        "# CURVE public keys allowed to connect to this deployment's sockets, one per line: KEY  comment"]
    lines.append(f"{public.decode('ascii')}  {comment}")
    auth_path.write_text("\n".join(lines) + "\n")
    os.chmod(auth_path, 0o644)
    return load_keys(d)


def keys_problem(directory: str | Path) -> str | None:
    """Why ``directory`` cannot be used as a keys directory (one line), or None."""
    d = Path(directory)
    if not d.is_dir():
        return f"transport.keys: {d} is not a folder; create the keys with 'rtneuro keys {d}'"
    for name in (PUBLIC_FILE, SECRET_FILE, AUTHORIZED_FILE):
        if not (d / name).is_file():
            return f"transport.keys: {d / name} is missing; create the keys with 'rtneuro keys {d}'"
    mode = stat.S_IMODE((d / SECRET_FILE).stat().st_mode)
    if mode & 0o077:
        return f"transport.keys: {d / SECRET_FILE} is readable by others (mode {mode:04o}); run 'chmod 600 {d / SECRET_FILE}'"
    try:
        load_keys(d)
    except ConfigError as exc:
        return str(exc)
    return None


def load_keys(directory: str | Path) -> Keys:
    """Read a keys directory written by :func:`create_keys`.

    Raises
    ------
    ConfigError
        A file is missing or malformed, or the secret key is readable by
        group or others.
    """
    d = Path(directory).expanduser().resolve()
    sec_path = d / SECRET_FILE
    try:
        mode = stat.S_IMODE(sec_path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(f"{sec_path} is readable by others (mode {mode:04o}); run 'chmod 600 {sec_path}'")
        secret = _z85_key(sec_path.read_text(), sec_path)
        public = _z85_key((d / PUBLIC_FILE).read_text(), d / PUBLIC_FILE)
        authorized = _read_authorized(d / AUTHORIZED_FILE)
    except FileNotFoundError as exc:
        raise ConfigError(f"{exc.filename} is missing; create the keys with 'rtneuro keys {d}'") from None
    if zmq.curve_public(secret) != public:
        raise ConfigError(f"{d}: {PUBLIC_FILE} is not the public key of {SECRET_FILE}; recreate them with 'rtneuro keys {d} --force'")
    server = _z85_key((d / SERVER_FILE).read_text(), d / SERVER_FILE) if (d / SERVER_FILE).exists() else public
    return Keys(d, public, secret, authorized, server)


# -- ZAP: one authenticator thread per context, one domain per keys directory ----

class _Authorizer:
    """ZAP credentials provider: accepts the keys of ``authorized``, logs the others."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.refused = 0

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.keys.authorized:
            return True
        self.refused += 1
        _ratelog.warning("unknown_key", "refused a CURVE client with unknown public key %s (not in %s); add it there if it should be allowed",
                         key[:40].decode("ascii", "replace"), self.keys.directory / AUTHORIZED_FILE)
        return False


class _ContextAuth:
    """The ZAP handler of one context: started with its first CURVE server, kept until
    :func:`stop_authenticator` (the ZAP endpoint of a stopped handler is released
    asynchronously, so stopping and starting again at once would fail)."""

    def __init__(self, ctx: zmq.Context) -> None:
        from zmq.auth.thread import ThreadAuthenticator

        self.auth = ThreadAuthenticator(ctx, log=logging.getLogger("rtneuro.security.zap"))
        for _ in range(100):
            try:
                self.auth.start()
                break
            except zmq.ZMQError as exc:  # the previous handler's endpoint is still being released
                if exc.errno != zmq.EADDRINUSE:
                    raise
                self.auth.stop()
                time.sleep(0.01)
        else:
            raise RtneuroError("cannot start the CURVE authenticator: inproc://zeromq.zap.01 is taken by another handler")
        self.users: dict[str, int] = {}
        self.providers: dict[str, _Authorizer] = {}
        self.monitor = _HandshakeMonitor()


#: Handshake failures a CURVE server's monitor reports: a client without CURVE
#: (mechanism mismatch), or one whose handshake does not decrypt (wrong server key).
_HANDSHAKE_EVENTS = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_MONITOR_STOPPED


class _HandshakeMonitor:
    """Counts and logs clients that never reach the ZAP handler (one thread per context).

    Each CURVE server socket gets a libzmq monitor (a PAIR socket) that this
    thread reads; a monitor ends when its socket closes (``MONITOR_STOPPED``)
    or when :meth:`stop` is called.
    """

    def __init__(self) -> None:
        import queue

        #: handshake failures by reason, all sockets of the context together
        self.counts: dict[str, int] = dict.fromkeys(REFUSAL_REASONS[1:], 0)
        self._new: queue.SimpleQueue = queue.SimpleQueue()
        self._stats: dict[zmq.Socket, dict[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtneuro-curve-monitor", daemon=True)
        self._thread.start()

    @property
    def refused(self) -> int:
        return sum(self.counts.values())

    def watch(self, sock: zmq.Socket) -> dict[str, int]:
        """Watch ``sock``; returns its own handshake failures by reason (updated by the thread)."""
        mon = sock.get_monitor_socket(_HANDSHAKE_EVENTS)
        mon.linger = 0
        stats = dict.fromkeys(REFUSAL_REASONS[1:], 0)
        self._new.put((mon, stats))  # the thread owns the monitor from here on
        return stats

    def _run(self) -> None:
        mons: list[zmq.Socket] = []
        try:
            self._loop(mons)
        except zmq.ZMQError:  # the context was destroyed under us: nothing left to watch
            pass
        for m in mons:
            with contextlib.suppress(zmq.ZMQError):
                m.close(0)

    def _loop(self, mons: list[zmq.Socket]) -> None:
        from zmq.utils.monitor import recv_monitor_message

        poller = zmq.Poller()
        while not self._stop.is_set():
            while not self._new.empty():
                m, stats = self._new.get()
                mons.append(m)
                self._stats[m] = stats
                poller.register(m, zmq.POLLIN)
            for m, _ev in poller.poll(50) if mons else []:
                try:
                    msg = recv_monitor_message(m, zmq.NOBLOCK)
                except zmq.Again:
                    continue
                if msg["event"] == zmq.EVENT_MONITOR_STOPPED:
                    poller.unregister(m)
                    mons.remove(m)
                    self._stats.pop(m, None)
                    m.close(0)
                    continue
                value = msg["value"]
                if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
                    reason, why = "no_curve", "it does not use CURVE"
                elif value == zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
                    reason, why = "wrong_server_key", "its CURVE handshake does not decrypt (a wrong server key)"
                else:
                    reason, why = "handshake", f"its handshake failed ({msg['event'].name}, {value})"
                self.counts[reason] += 1
                stats = self._stats.get(m)
                if stats is not None:
                    stats[reason] += 1
                _ratelog.warning(reason, "refused a client on %s: %s; clients need the deployment's keys "
                                 "(transport.keys, made by 'rtneuro keys'; an operator's own folder needs its server.key)",
                                 msg["endpoint"].decode("utf-8", "replace"), why)
            if not mons:
                self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


_auth_lock = threading.Lock()
_auths: dict[int, _ContextAuth] = {}


def curve_server(sock: zmq.Socket, keys: Keys) -> dict[str, int]:
    """Make ``sock`` (before it binds) a CURVE server that only accepts ``keys.authorized``.

    Starts the context's ZAP authenticator on first use. Call
    :func:`release_server` when the socket is closed.

    Returns
    -------
    dict
        This socket's failed handshakes by reason (``no_curve``,
        ``wrong_server_key``, ``handshake``; a client that keeps retrying
        counts once per attempt), kept up to date by the monitor thread.
        Unknown keys are refused by the ZAP handler, counted per context
        by :func:`security_stats`.
    """
    ctx = sock.context
    with _auth_lock:
        entry = _auths.get(id(ctx))
        if entry is None:
            entry = _auths[id(ctx)] = _ContextAuth(ctx)
        domain = keys.domain
        if domain not in entry.providers:
            entry.providers[domain] = _Authorizer(keys)
            entry.auth.configure_curve_callback(domain, credentials_provider=entry.providers[domain])
        else:
            entry.providers[domain].keys = keys  # the authorized list may have changed
        entry.users[domain] = entry.users.get(domain, 0) + 1
    sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode())
    # fail closed: without a ZAP handler libzmq would accept any CURVE client
    sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_server = True
    return entry.monitor.watch(sock)


def release_server(ctx: zmq.Context, keys: Keys) -> None:
    """A CURVE server socket of ``ctx`` was closed (bookkeeping; the handler stays)."""
    with _auth_lock:
        entry = _auths.get(id(ctx))
        if entry is None:
            return
        domain = keys.domain
        entry.users[domain] = entry.users.get(domain, 1) - 1
        if entry.users[domain] <= 0:
            entry.users.pop(domain, None)


def stop_authenticator(ctx: zmq.Context) -> None:
    """Stop the ZAP handler of ``ctx``, if any: call before terminating the context."""
    with _auth_lock:
        entry = _auths.pop(id(ctx), None)
    if entry is not None:
        entry.monitor.stop()
        entry.auth.stop()


def refusals(ctx: zmq.Context) -> int:
    """Clients refused so far by the CURVE servers of ``ctx`` (every reason together)."""
    return sum(security_stats(ctx).values())


def security_stats(ctx: zmq.Context) -> dict[str, int]:
    """Clients refused so far by the CURVE servers of ``ctx``, by reason (:data:`REFUSAL_REASONS`).

    For the run report; every refusal is also logged, at most once per
    reason per 10 s with the count of the others.
    """
    out = dict.fromkeys(REFUSAL_REASONS, 0)
    with _auth_lock:
        entry = _auths.get(id(ctx))
        if entry is not None:
            out["unknown_key"] = sum(p.refused for p in entry.providers.values())
            out.update(entry.monitor.counts)
    return out


def curve_client(sock: zmq.Socket, keys: Keys) -> None:
    """Make ``sock`` (before it connects) a CURVE client presenting ``keys``.

    It expects the servers to present ``keys.server`` (the deployment's
    public key).
    """
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_serverkey = keys.server


# -- ipc and private folders -------------------------------------------------

def secure_ipc(endpoint: str) -> None:
    """Make the socket file of a bound ``ipc://`` endpoint owner-only (``0600``)."""
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://"):]
        if path and not path.startswith("@"):  # '@': Linux abstract namespace, no file
            os.chmod(path, 0o600)


def private_dir(path: str | Path) -> Path:
    """Create (or check) a folder only its owner can use: mode ``0700``, owned by this user.

    Raises
    ------
    RtneuroError
        The folder exists but is a symbolic link, belongs to someone else or
        is open to others.
    """
    p = Path(path)
    try:
        p.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    st = os.lstat(p)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise RtneuroError(f"{p} is not a folder (a symbolic link?); remove it and try again")
    if st.st_uid != os.getuid():
        raise RtneuroError(f"{p} belongs to uid {st.st_uid}, not to you; remove it or set RTNEURO_RUNTIME_DIR")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(p, 0o700)
    return p


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
