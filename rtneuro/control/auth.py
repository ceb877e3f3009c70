"""Who may read or steer a running graph through the control API: tokens, roles and TLS.

Threat model
    The control API changes parameters of a graph that stimulates a person,
    arms and clears emergency stops, starts recordings. Only the operators
    of the deployment may steer it; observers (a dashboard, a colleague) may
    watch it. Anyone else gets nothing, not even the graph's shape.

Loopback by default
    The server listens on ``127.0.0.1`` unless ``control.host`` says
    otherwise. Loopback keeps other machines out, but not other users of this
    machine (any local process can connect to a loopback TCP port), nor a web
    page in the operator's browser (which can send requests to
    ``localhost``). So every request carries a token, on loopback too:
    ``Authorization: Bearer TOKEN`` (a browser's WebSocket: ``?token=``,
    which must then be kept out of access logs).
    There are no cookies, hence no ambient authority a foreign page (or a
    DNS-rebinding one) could borrow.

The run's own token
    Each run mints a fresh token (:func:`mint_run_token`, name ``local``,
    role ``steer``) and stores it in its registry entry, a file of mode
    ``0600`` in the owner-only runs folder: the command line of the same
    user finds it there, other users cannot read it. It dies with the run.

Tokens folder (``rtneuro keys DIR --token NAME --role steer|observer``)
    ``tokens.json``
        One entry per token: its name, role, creation time and the SHA-256
        of the token, never the token itself. Mode ``0600``; refused if
        group or others can read or write it, or if the folder is writable
        by them. Rewritten atomically (a temporary file, then
        ``os.replace``). A running server re-reads it when it changes: a
        revoked token stops working at once, without restarting the run.
    ``NAME.token``
        The token in clear (mode ``0600``), for the client to present. Hand
        it to its user and delete it; the server never reads it.

    Tokens are 256 random bits (:func:`secrets.token_urlsafe`): a plain
    SHA-256 is enough to store them, there is no password to stretch. The
    comparison is made on hashes with :func:`hmac.compare_digest`, against
    every stored hash; a hostile token (over 512 characters, or not ASCII)
    is refused before any hashing.

Roles (:data:`ROLES`)
    ``observer``
        Every ``GET``/``HEAD`` route and the WebSocket of push events.
    ``steer``
        Also every ``POST``: parameters, annotations, stimulation, recording,
        replay.

Beyond loopback
    Any other ``control.host`` needs TLS (a token in clear on a network can
    be copied) and a tokens folder with at least one token
    (:func:`check_exposure`). :func:`create_tls` makes a self-signed
    certificate for the names and addresses clients use; clients trust that
    certificate file itself (``cafile``), checking the host name as usual.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
import stat
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, did_you_mean
from ..ratelog import RateLog
from ..security import is_loopback, private_dir

__all__ = [
    "ROLES",
    "READ_METHODS",
    "TOKENS_FILE",
    "TLS_CERT_FILE",
    "TLS_KEY_FILE",
    "MAX_TOKEN_LEN",
    "Identity",
    "TokenAuth",
    "allows",
    "bearer_token",
    "default_tokens_dir",
    "create_token",
    "revoke_token",
    "list_tokens",
    "read_token",
    "mint_run_token",
    "create_tls",
    "check_tls",
    "check_exposure",
]

log = logging.getLogger(__name__)
_ratelog = RateLog(log)

#: Token roles, weakest first: ``observer`` reads (GET, HEAD, the WebSocket), ``steer`` also POSTs.
ROLES = ("observer", "steer")
#: What an ``observer`` may do: methods that change nothing, and the WebSocket of push events.
READ_METHODS = frozenset({"GET", "HEAD", "WEBSOCKET"})
TOKENS_FILE = "tokens.json"
TLS_CERT_FILE = "tls_cert.pem"
TLS_KEY_FILE = "tls_key.pem"
#: Longer tokens are refused unread (a made token is 47 characters).
MAX_TOKEN_LEN = 512
_PREFIX = "rtn_"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_FORMAT = 1


# -- identities and roles -----------------------------------------------------

@dataclass(frozen=True, slots=True)
class Identity:
    """Who made a request.

    Parameters
    ----------
    name : str
        The token's name (``"local"`` for the run's own token); requests are
        recorded under it (the ctl record's ``who``).
    role : str
        One of :data:`ROLES`.
    """

    name: str
    role: str


def allows(identity: Identity | None, method: str) -> bool:
    """Whether ``identity`` may use a route of this HTTP ``method``.

    Parameters
    ----------
    identity : Identity or None
        From :meth:`TokenAuth.check`; None (no valid token) is never allowed.
    method : str
        ``"GET"``, ``"POST"``, ... or ``"WEBSOCKET"`` for the push events
        (any case).

    Returns
    -------
    bool
        ``steer`` may do everything; ``observer`` only :data:`READ_METHODS`.
    """
    if identity is None:
        return False
    if identity.role == "steer":
        return True
    return identity.role == "observer" and method.upper() in READ_METHODS


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header value, or None.

    The scheme's case does not count; a value too long to hold a valid token
    gives None without being parsed further.
    """
    if not isinstance(authorization, str) or len(authorization) > MAX_TOKEN_LEN + 64:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def mint_run_token() -> str:
    """A fresh random token: ``rtn_`` and 43 URL-safe characters (256 bits).

    A run mints one for its own use (name ``local``, role ``steer``);
    :func:`create_token` makes its tokens the same way.
    """
    return _PREFIX + secrets.token_urlsafe(32)


def _digest(token: str) -> bytes | None:
    """SHA-256 of a token that could be valid, else None (bounded work whatever the input)."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LEN or not token.isascii():
        return None
    return hashlib.sha256(token.encode("ascii")).digest()


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"token name {name!r} is not valid; use a letter then up to 63 letters, digits, '_', '.' or '-'")
    return name


def _check_role(role: object) -> str:
    if role not in ROLES:
        raise ConfigError(f"token role {role!r} is not one of {', '.join(ROLES)}{did_you_mean(str(role), ROLES)}")
    return str(role)


# -- the tokens folder -----------------------------------------------------------

def default_tokens_dir() -> Path:
    """The tokens folder when the graph names none: ``$RTNEURO_TOKENS_DIR``, else ``~/.config/rtneuro/tokens``.

    Only the path: the folder is created (``0700``) by :func:`create_token`.
    """
    env = os.environ.get("RTNEURO_TOKENS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".config" / "rtneuro" / "tokens"


def _read_tokens(directory: Path) -> tuple[dict[str, dict[str, Any]], os.stat_result | None]:
    """Entries of ``directory/tokens.json`` (empty if it does not exist) and its stat.

    Raises
    ------
    ConfigError
        The file or the folder is open to others, or the file is malformed.
    """
    path = directory / TOKENS_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return {}, None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror}); it must be a plain file of yours with mode 0600") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        mode = stat.S_IMODE(st.st_mode)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path} is not a plain file; remove it and create the tokens again with 'rtneuro keys DIR --token NAME'")
        if st.st_uid != os.getuid():
            raise ConfigError(f"{path} belongs to uid {st.st_uid}, not to you; remove it or use a tokens folder of your own")
        if mode & 0o077:
            raise ConfigError(f"{path} is open to group or others (mode {mode:04o}); run 'chmod 600 {path}'")
        dmode = stat.S_IMODE(os.stat(directory).st_mode)
        if dmode & 0o022:
            raise ConfigError(f"{directory} can be written by group or others (mode {dmode:04o}); run 'chmod 700 {directory}'")
        raw = fh.read()
    try:
        doc = json.loads(raw)
        entries = doc["tokens"]
        if not isinstance(entries, dict):
            raise TypeError("tokens is not an object")
        for name, entry in entries.items():
            _check_name(name)
            _check_role(entry["role"])
            if not re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]):
                raise ValueError(f"token {name!r}: sha256 is not 64 hex digits")
    except (ValueError, TypeError, KeyError, AttributeError, ConfigError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path} is malformed ({why}); fix it or remove it and create the tokens again") from None
    return entries, st


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file + os.replace), mode ``0600`` from the start."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_tokens(directory: Path, entries: Mapping[str, Mapping[str, Any]]) -> None:
    doc = {"format": _FORMAT, "tokens": {n: dict(entries[n]) for n in sorted(entries)}}
    _write_private(directory / TOKENS_FILE, json.dumps(doc, indent=2) + "\n")


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialize the writers of one tokens folder (two ``rtneuro keys --token`` at once)."""
    fd = os.open(directory / ".tokens.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _folder(directory: str | Path) -> Path:
    try:
        return private_dir(Path(directory).expanduser())
    except OSError as exc:
        raise ConfigError(f"tokens folder {directory}: {exc.strerror}; choose another folder") from None


def create_token(directory: str | Path, name: str, role: str, *, force: bool = False) -> str:
    """Make a token, record its hash in ``directory/tokens.json`` and write it to ``directory/NAME.token``.

    Parameters
    ----------
    directory : str or Path
        The tokens folder, created with mode ``0700`` if missing.
    name : str
        A letter, then up to 63 letters, digits, ``_``, ``.`` or ``-``;
        requests made with the token are recorded under this name.
    role : str
        One of :data:`ROLES`.
    force : bool
        Replace an existing token of that name (the old one stops working).

    Returns
    -------
    str
        The token (``rtn_`` and 43 URL-safe characters). It is also in
        ``NAME.token`` (mode ``0600``); the folder keeps only its hash.

    Raises
    ------
    ConfigError
        Invalid name or role, the name is taken and ``force`` is False, or
        ``tokens.json`` is open to others or malformed.
    RtneuroError
        The folder belongs to someone else or is a symbolic link.
    """
    _check_name(name)
    _check_role(role)
    d = _folder(directory)
    with _locked(d):
        entries, _ = _read_tokens(d)
        if name in entries and not force:
            raise ConfigError(f"a token named '{name}' exists in {d}; choose another name, or replace it with "
                              f"'rtneuro keys {d} --token {name} --role {role} --force'")
        token = mint_run_token()
        created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        entries[name] = {"role": role, "created": created, "sha256": hashlib.sha256(token.encode("ascii")).hexdigest()}
        # the clear token first: the hash only becomes valid once its user can find the token
        _write_private(d / f"{name}.token", token + "\n")
        _write_tokens(d, entries)
    log.info("token '%s' (%s) created in %s", name, role, d)
    return token


def revoke_token(directory: str | Path, name: str) -> None:
    """Remove token ``name`` from ``directory`` (its hash and its ``NAME.token``).

    A server using the folder refuses the token from its next request on.

    Raises
    ------
    ConfigError
        No token of that name, or ``tokens.json`` is open to others or malformed.
    """
    d = Path(directory).expanduser()
    if not d.is_dir():
        raise ConfigError(f"no token '{name}': {d} is not a folder; tokens are made with 'rtneuro keys DIR --token NAME'")
    with _locked(d):
        entries, _ = _read_tokens(d)
        if name not in entries:
            known = ", ".join(sorted(entries)) or "none"
            raise ConfigError(f"no token '{name}' in {d}{did_you_mean(name, entries)}; tokens: {known}")
        del entries[name]
        _write_tokens(d, entries)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(d / f"{name}.token")
    log.info("token '%s' revoked in %s", name, d)


def list_tokens(directory: str | Path) -> list[dict[str, str]]:
    """The tokens of ``directory``: ``[{"name", "role", "created"}]`` sorted by name.

    A missing folder or ``tokens.json`` holds no tokens.

    Raises
    ------
    ConfigError
        ``tokens.json`` is open to others or malformed.
    """
    d = Path(directory).expanduser()
    if not d.is_dir():
        return []
    entries, _ = _read_tokens(d)
    return [{"name": n, "role": e["role"], "created": str(e.get("created", ""))} for n, e in sorted(entries.items())]


def read_token(path: str | Path) -> str:
    """Read a token written by :func:`create_token` (``NAME.token``), for a client.

    Raises
    ------
    ConfigError
        Missing, open to group or others, or not a token.
    """
    p = Path(path).expanduser()
    try:
        st = os.stat(p)
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise ConfigError(f"{p} is open to group or others (mode {mode:04o}); run 'chmod 600 {p}'")
        with open(p, "rb") as fh:
            text = fh.read(MAX_TOKEN_LEN + 2).decode("ascii").strip()
    except FileNotFoundError:
        raise ConfigError(f"{p} is missing; make a token with 'rtneuro keys DIR --token NAME --role steer'") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p} cannot be read as a token ({exc}); make a new one with 'rtneuro keys DIR --token NAME --force'") from None
    if _digest(text) is None or any(c.isspace() for c in text):
        raise ConfigError(f"{p} does not hold a token; make a new one with 'rtneuro keys DIR --token NAME --force'")
    return text


# -- the server's check ---------------------------------------------------------

def _stamp(st: os.stat_result) -> tuple[int, ...]:
    """What changes when ``tokens.json`` is replaced, edited or chmod-ed."""
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


class TokenAuth:
    """The tokens a control server accepts: a tokens folder's, and extra ones held in memory.

    Parameters
    ----------
    directory : str, Path or None
        Tokens folder (:func:`create_token`); None: no folder. A folder or
        ``tokens.json`` that does not exist yet holds no tokens, and is read
        as soon as it appears.
    extra : mapping of str to (token, role), optional
        In-memory tokens by name, e.g. the run's own
        ``{"local": (mint_run_token(), "steer")}``.

    Raises
    ------
    ConfigError
        ``tokens.json`` is open to others or malformed, or an extra token
        is not a valid token, name or role.

    Notes
    -----
    :meth:`check` re-reads ``tokens.json`` when its modification or
    status-change time, size or inode changes (``revoke_token`` replaces
    it), so revoking a token takes effect at the next request. If the file becomes unreadable
    or open to others while the server runs, the folder's tokens are all
    refused (failing closed) and a warning says why; the extra tokens still
    work. Thread-safe.
    """

    def __init__(self, directory: str | Path | None = None, *,
                 extra: Mapping[str, tuple[str, str]] | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory is not None else None
        fixed: list[tuple[bytes, Identity]] = []
        for name, (token, role) in (extra or {}).items():
            digest = _digest(token)
            if digest is None or any(c.isspace() for c in token):
                raise ConfigError(f"extra token '{name}' is not a token (1 to {MAX_TOKEN_LEN} ASCII characters); make one with mint_run_token()")
            fixed.append((digest, Identity(_check_name(name), _check_role(role))))
        self._extra = tuple(fixed)
        self._lock = threading.Lock()
        self._stamp: tuple[int, ...] | None = None
        self._folder: tuple[tuple[bytes, Identity], ...] = ()
        if self.directory is not None:
            if self.directory.exists() and not self.directory.is_dir():
                raise ConfigError(f"control.tokens {self.directory} is not a folder; name the folder made by 'rtneuro keys DIR --token NAME'")
            entries, st = _read_tokens(self.directory) if self.directory.is_dir() else ({}, None)
            self._set_folder(entries, st)

    def _set_folder(self, entries: Mapping[str, Mapping[str, Any]], st: os.stat_result | None) -> None:
        self._folder = tuple((bytes.fromhex(e["sha256"]), Identity(n, e["role"])) for n, e in entries.items())
        self._stamp = None if st is None else _stamp(st)

    def _refresh(self) -> None:
        """Re-read ``tokens.json`` if it changed since it was last read."""
        assert self.directory is not None
        try:
            st = os.stat(self.directory / TOKENS_FILE)
            stamp: tuple[int, ...] | None = _stamp(st)
        except FileNotFoundError:
            stamp = None
        except OSError:
            stamp = (-1,)  # unreadable: try (and fail closed) below
        with self._lock:
            if stamp == self._stamp and stamp != (-1,):
                return
            try:
                entries, st2 = _read_tokens(self.directory) if stamp is not None else ({}, None)
            except ConfigError as exc:
                self._folder, self._stamp = (), stamp
                _ratelog.warning("tokens", "refusing every token of %s: %s", self.directory, exc)
                return
            before = {i.name for _, i in self._folder}
            self._set_folder(entries, st2)
            after = {i.name for _, i in self._folder}
            if before != after:
                log.info("tokens of %s reloaded: %d (%s)", self.directory, len(after), ", ".join(sorted(after)) or "none")

    def check(self, token: str | None) -> Identity | None:
        """The identity of ``token``, or None if it is not a valid token.

        Never raises: absent, empty, over :data:`MAX_TOKEN_LEN` characters,
        non-ASCII or non-string tokens give None without hashing. A valid
        token is compared (on SHA-256 hashes, in constant time) with every
        known one.
        """
        digest = _digest(token) if token is not None else None
        if digest is None:
            return None
        if self.directory is not None:
            self._refresh()
        found: Identity | None = None
        for known, identity in self._extra + self._folder:
            if hmac.compare_digest(digest, known) and found is None:
                found = identity
        return found

    def names(self) -> list[str]:
        """Names of the tokens accepted now (the folder's as last read, then the extra ones)."""
        if self.directory is not None:
            self._refresh()
        return [i.name for _, i in self._folder + self._extra]


# -- TLS -------------------------------------------------------------------------

def _san(hosts: list[str]) -> list:
    from cryptography import x509

    names: list = []
    for host in hosts:
        h = host.strip().strip("[]") if isinstance(host, str) else ""
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
            continue
        except ValueError:
            pass
        if not re.fullmatch(r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?", h) or len(h) > 253:
            raise ConfigError(f"TLS host {host!r} is neither an IP address nor a DNS name; give the names clients connect to, e.g. --tls localhost --tls 192.168.1.20")
        names.append(x509.DNSName(h.rstrip(".")))
    return names


def create_tls(directory: str | Path, hosts: list[str], days: int = 365, *, force: bool = False) -> tuple[Path, Path]:
    """Make a self-signed TLS certificate (EC P-256) for the control server.

    Parameters
    ----------
    directory : str or Path
        Created with mode ``0700`` if missing; receives ``tls_cert.pem``
        (mode ``0644``) and ``tls_key.pem`` (mode ``0600``).
    hosts : list of str
        DNS names and IP addresses clients use to reach the server (the
        subjectAltName; clients check it). The first one is also the
        subject's common name.
    days : int
        Validity, from now (backdated 5 minutes for clock skew).
    force : bool
        Replace an existing certificate (clients that trusted the old one
        must get the new ``tls_cert.pem``).

    Returns
    -------
    cert_path, key_path : Path
        For ``control.tls_cert`` and ``control.tls_key``; clients trust
        ``cert_path`` (e.g. ``ssl.create_default_context(cafile=cert_path)``).

    Raises
    ------
    ConfigError
        No hosts, an invalid host, ``days`` < 1, or a certificate exists
        and ``force`` is False.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not hosts:
        raise ConfigError("create_tls needs at least one host name or address clients connect to, e.g. --tls localhost")
    if not isinstance(days, int) or days < 1:
        raise ConfigError(f"TLS certificate validity {days!r} days is not valid; give a whole number of days >= 1")
    san = _san(hosts)
    d = private_dir(Path(directory).expanduser())
    cert_path, key_path = d / TLS_CERT_FILE, d / TLS_KEY_FILE
    if (cert_path.exists() or key_path.exists()) and not force:
        raise ConfigError(f"{d} already holds a TLS certificate; use it, or replace it with 'rtneuro keys {d} --tls HOST --force'")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    common = hosts[0].strip().strip("[]")[:64]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "rtneuro control")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode("ascii")
    _write_private(key_path, key_pem)
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM).decode("ascii"))
    os.chmod(cert_path, 0o644)
    log.info("TLS certificate for %s written to %s (valid %d days)", ", ".join(hosts), cert_path, days)
    return cert_path, key_path


def check_tls(cert: str | Path, key: str | Path) -> None:
    """Check that ``cert`` and ``key`` (PEM) can serve TLS now.

    Raises
    ------
    ConfigError
        One line naming the fix: a file is missing or unreadable, not PEM,
        the key is encrypted or open to group or others, the key is not the
        certificate's, or the certificate has expired (or is not valid yet).
    """
    import ssl

    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    cert_p, key_p = Path(cert).expanduser(), Path(key).expanduser()
    remake = "make a new pair with 'rtneuro keys DIR --tls HOST --force'"
    data = {}
    for what, p in (("tls_cert", cert_p), ("tls_key", key_p)):
        try:
            data[what] = p.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"control.{what} {p} is missing; {remake}") from None
        except OSError as exc:
            raise ConfigError(f"control.{what} {p} cannot be read ({exc.strerror}); fix its permissions or {remake}") from None
    mode = stat.S_IMODE(os.stat(key_p).st_mode)
    if mode & 0o077:
        raise ConfigError(f"control.tls_key {key_p} is open to group or others (mode {mode:04o}); run 'chmod 600 {key_p}'")
    try:
        certificate = x509.load_pem_x509_certificate(data["tls_cert"])
    except ValueError:
        raise ConfigError(f"control.tls_cert {cert_p} is not a PEM certificate; {remake}") from None
    try:
        private = serialization.load_pem_private_key(data["tls_key"], password=None)
    except TypeError:
        raise ConfigError(f"control.tls_key {key_p} is encrypted; give an unencrypted key (mode 0600) or {remake}") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"control.tls_key {key_p} is not a PEM private key ({type(exc).__name__}); {remake}") from None
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if certificate.public_key().public_bytes(*spki) != private.public_key().public_bytes(*spki):
        raise ConfigError(f"control.tls_key {key_p} is not the key of control.tls_cert {cert_p}; give the matching pair or {remake}")
    now = datetime.datetime.now(datetime.UTC)
    if certificate.not_valid_after_utc <= now:
        raise ConfigError(f"control.tls_cert {cert_p} expired on {certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; {remake}")
    if certificate.not_valid_before_utc > now:
        raise ConfigError(f"control.tls_cert {cert_p} is not valid before {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC; "
                          f"check this machine's clock or {remake}")
    try:  # what the server will do with them
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_p, key_p)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"control.tls_cert {cert_p} with {key_p} cannot serve TLS ({exc}); {remake}") from None


def check_exposure(host: str, tls_cert: str | Path | None, tls_key: str | Path | None,
                   tokens_dir: str | Path | None) -> None:
    """Refuse a control server reachable from other machines without TLS and tokens.

    Parameters
    ----------
    host : str
        ``control.host``; a loopback address needs nothing more (the run's
        own token protects it).
    tls_cert, tls_key : str, Path or None
        ``control.tls_cert`` and ``control.tls_key`` (resolved paths).
    tokens_dir : str, Path or None
        The tokens folder the server will use (the graph's, else
        :func:`default_tokens_dir`); None: none.

    Raises
    ------
    ConfigError
        ``host`` is not loopback and TLS or a tokens folder with at least
        one token is missing, or the TLS files are not usable
        (:func:`check_tls`).
    """
    if is_loopback(host):
        return
    need = []
    if tls_cert is None or tls_key is None:
        need.append("tls_cert and tls_key (rtneuro keys DIR --tls HOST)")
    tokens = list_tokens(tokens_dir) if tokens_dir is not None else []
    if not tokens:
        need.append("a tokens folder with at least one token (rtneuro keys DIR --token NAME --role steer)")
    if need:
        where = f" ({Path(tokens_dir).expanduser()} has none)" if tokens_dir is not None and not tokens else ""
        raise ConfigError(f"control.host {host} is not loopback: it needs {' and '.join(need)}{where}")
    assert tls_cert is not None and tls_key is not None
    check_tls(tls_cert, tls_key)
