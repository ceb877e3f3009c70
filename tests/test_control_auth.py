"""Control API access: tokens and roles in real files, TLS certificates and a real TLS handshake."""

from __future__ import annotations

import datetime
import json
import os
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtneuro.control.auth import (
    MAX_TOKEN_LEN,
    ROLES,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
    TOKENS_FILE,
    Identity,
    TokenAuth,
    allows,
    bearer_token,
    check_exposure,
    check_tls,
    create_tls,
    create_token,
    default_tokens_dir,
    list_tokens,
    mint_run_token,
    read_token,
    revoke_token,
)
from rtneuro.errors import ConfigError, RtneuroError


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and text
    return text


def _touch_later(path: Path) -> None:
    """Move the modification time of ``path`` one second on, whatever the clock's resolution."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


@pytest.fixture
def folder(tmp_path):
    """A tokens folder holding alice (steer) and bob (observer); returns (folder, {name: token})."""
    d = tmp_path / "tokens"
    return d, {"alice": create_token(d, "alice", "steer"), "bob": create_token(d, "bob", "observer")}


# -- the tokens folder ----------------------------------------------------------

def test_create_list_revoke(folder):
    d, tokens = folder
    listed = list_tokens(d)
    assert [(t["name"], t["role"]) for t in listed] == [("alice", "steer"), ("bob", "observer")]
    for t in listed:
        assert datetime.datetime.fromisoformat(t["created"]).tzinfo is not None
    for name, token in tokens.items():
        assert token.startswith("rtn_") and len(token) == 47
        assert (d / f"{name}.token").read_text().strip() == token
        assert read_token(d / f"{name}.token") == token
    assert tokens["alice"] != tokens["bob"]
    stored = (d / TOKENS_FILE).read_text()
    assert not any(token in stored for token in tokens.values())  # hashes only
    assert set(json.loads(stored)["tokens"]) == {"alice", "bob"}

    revoke_token(d, "alice")
    assert [t["name"] for t in list_tokens(d)] == ["bob"]
    assert not (d / "alice.token").exists()
    with pytest.raises(ConfigError) as exc:
        revoke_token(d, "alise")
    assert "no token 'alise'" in _one_line(exc) and "tokens: bob" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        revoke_token(d, "bbo")
    assert "did you mean 'bob'" in _one_line(exc)
    with pytest.raises(ConfigError):
        revoke_token(d.parent / "nowhere", "bob")


def test_missing_folder_holds_no_tokens(tmp_path):
    assert list_tokens(tmp_path / "nowhere") == []
    assert list_tokens(tmp_path) == []  # a folder without tokens.json
    auth = TokenAuth(tmp_path / "later")
    assert auth.names() == []
    token = create_token(tmp_path / "later", "carol", "steer")  # appears while the server runs
    assert auth.check(token) == Identity("carol", "steer")


def test_modes_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        d = tmp_path / "a" / "tokens"
        create_token(d, "alice", "steer")
        cert, key = create_tls(tmp_path / "tls", ["localhost"])
    finally:
        os.umask(old)
    assert _mode(d) == 0o700
    assert _mode(d / TOKENS_FILE) == 0o600
    assert _mode(d / "alice.token") == 0o600
    assert _mode(tmp_path / "tls") == 0o700
    assert _mode(key) == 0o600 and _mode(cert) == 0o644
    assert not [p.name for p in d.iterdir() if p.name.endswith(".tmp")]  # no temporary file left


def test_open_folder_is_closed_by_create(tmp_path):
    d = tmp_path / "tokens"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o777)
    create_token(d, "alice", "steer")
    assert _mode(d) == 0o700


def test_existing_name_needs_force(folder):
    d, tokens = folder
    with pytest.raises(ConfigError) as exc:
        create_token(d, "alice", "observer")
    assert "--force" in _one_line(exc)
    assert read_token(d / "alice.token") == tokens["alice"]  # untouched
    auth = TokenAuth(d)
    new = create_token(d, "alice", "observer", force=True)
    assert new != tokens["alice"]
    assert auth.check(tokens["alice"]) is None
    assert auth.check(new) == Identity("alice", "observer")


@pytest.mark.parametrize("name", ["", "1abc", "-x", "a b", "a/b", "../x", "é", "a" * 65, "alice\n", ".hidden"])
def test_invalid_name_refused(tmp_path, name):
    with pytest.raises(ConfigError) as exc:
        create_token(tmp_path, name, "steer")
    assert "is not valid" in _one_line(exc)
    assert not (tmp_path / TOKENS_FILE).exists()


def test_valid_names_and_roles(tmp_path):
    for name in ("a", "A.b-c_9", "x" * 64):
        create_token(tmp_path, name, "observer")
    with pytest.raises(ConfigError) as exc:
        create_token(tmp_path, "dave", "steeer")
    assert "did you mean 'steer'" in _one_line(exc)
    with pytest.raises(ConfigError):
        create_token(tmp_path, "dave", "admin")


def test_group_readable_tokens_file_refused(folder):
    d, tokens = folder
    path = d / TOKENS_FILE
    for mode in (0o640, 0o604, 0o620):
        os.chmod(path, mode)
        for call in (lambda: list_tokens(d), lambda: TokenAuth(d), lambda: create_token(d, "eve", "steer"),
                     lambda: revoke_token(d, "bob")):
            with pytest.raises(ConfigError) as exc:
                call()
            assert f"chmod 600 {path}" in _one_line(exc)
    os.chmod(path, 0o600)
    assert [t["name"] for t in list_tokens(d)] == ["alice", "bob"]  # nothing changed meanwhile


def test_group_writable_folder_refused(folder):
    d, _ = folder
    os.chmod(d, 0o770)
    with pytest.raises(ConfigError) as exc:
        TokenAuth(d)
    assert f"chmod 700 {d}" in _one_line(exc)


def test_malformed_tokens_file_refused(folder):
    d, _ = folder
    path = d / TOKENS_FILE
    for text in ("not json", "[]", '{"tokens": []}', '{"tokens": {"a": {"role": "root", "sha256": "00"}}}',
                 '{"tokens": {"a": {"role": "steer", "sha256": "xyz"}}}'):
        path.write_text(text)
        with pytest.raises(ConfigError) as exc:
            list_tokens(d)
        assert "malformed" in _one_line(exc)


def test_symlinked_tokens_file_refused(folder, tmp_path):
    d, _ = folder
    real = tmp_path / "elsewhere.json"
    os.replace(d / TOKENS_FILE, real)
    os.symlink(real, d / TOKENS_FILE)
    with pytest.raises(ConfigError) as exc:
        TokenAuth(d)
    _one_line(exc)


def test_foreign_symlink_folder_refused(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    with pytest.raises(RtneuroError):
        create_token(tmp_path / "link", "alice", "steer")


def test_default_tokens_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("RTNEURO_TOKENS_DIR", str(tmp_path / "t"))
    assert default_tokens_dir() == tmp_path / "t"
    assert not (tmp_path / "t").exists()  # only a path
    monkeypatch.delenv("RTNEURO_TOKENS_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_tokens_dir() == tmp_path / ".config" / "rtneuro" / "tokens"


def test_read_token_refusals(tmp_path):
    p = tmp_path / "x.token"
    with pytest.raises(ConfigError) as exc:
        read_token(p)
    assert "missing" in _one_line(exc)
    p.write_text(mint_run_token() + "\n")
    os.chmod(p, 0o644)
    with pytest.raises(ConfigError) as exc:
        read_token(p)
    assert "chmod 600" in _one_line(exc)
    os.chmod(p, 0o600)
    for text in ("", "two words", "é" * 3):
        p.write_text(text)
        with pytest.raises(ConfigError):
            read_token(p)


# -- checking tokens ---------------------------------------------------------------

def test_check_roles_and_refusals(folder):
    d, tokens = folder
    auth = TokenAuth(d)
    assert auth.check(tokens["alice"]) == Identity("alice", "steer")
    assert auth.check(tokens["bob"]) == Identity("bob", "observer")
    assert sorted(auth.names()) == ["alice", "bob"]
    wrong = [None, "", "rtn_", mint_run_token(), tokens["alice"][:-1], tokens["alice"] + "x",
             tokens["alice"].upper(), " " + tokens["alice"], tokens["alice"] + "\x00",
             tokens["alice"] + " " * (MAX_TOKEN_LEN + 1), "a" * 100_000,
             tokens["alice"][:-1] + "é", "é" + tokens["alice"]]
    for token in wrong:
        assert auth.check(token) is None, token[:60] if token else token
    for token in (b"bytes", 42, ["list"], {"token": tokens["alice"]}, tokens["alice"].encode()):
        assert auth.check(token) is None  # type: ignore[arg-type]


def test_allows():
    steer, observer = Identity("a", "steer"), Identity("b", "observer")
    for method in ("GET", "head", "WebSocket"):
        assert allows(observer, method) and allows(steer, method)
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", ""):
        assert not allows(observer, method)
        assert allows(steer, method)
    assert not allows(None, "GET")
    assert not allows(Identity("c", "root"), "GET")
    assert ROLES == ("observer", "steer")


def test_bearer_token():
    token = mint_run_token()
    assert bearer_token(f"Bearer {token}") == token
    assert bearer_token(f"bearer   {token}  ") == token
    for value in (None, "", "Bearer", "Bearer ", f"Basic {token}", token, "Bearer " + "x" * 1000, 42):
        assert bearer_token(value) is None  # type: ignore[arg-type]


def test_reload_after_revoke(folder):
    d, tokens = folder
    auth = TokenAuth(d)
    assert auth.check(tokens["alice"]) == Identity("alice", "steer")
    revoke_token(d, "alice")
    _touch_later(d / TOKENS_FILE)
    assert auth.check(tokens["alice"]) is None  # no restart
    assert auth.check(tokens["bob"]) == Identity("bob", "observer")
    carol = create_token(d, "carol", "steer")
    _touch_later(d / TOKENS_FILE)
    assert auth.check(carol) == Identity("carol", "steer")


def test_reload_after_edit_in_place(folder):
    """An edit that keeps the file (same inode, same size) is seen through its modification time."""
    d, tokens = folder
    auth = TokenAuth(d)
    path = d / TOKENS_FILE
    doc = json.loads(path.read_text())
    doc["tokens"]["alice"]["role"], doc["tokens"]["bob"]["role"] = "observer", "steer"
    text = json.dumps(doc, indent=2) + "\n"
    inode, size = os.stat(path).st_ino, os.stat(path).st_size
    with open(path, "r+") as fh:
        fh.truncate(0)
        fh.write(text)
    _touch_later(path)
    assert os.stat(path).st_ino == inode and len(text) == size  # the roles swapped: same length
    assert auth.check(tokens["alice"]) == Identity("alice", "observer")
    assert auth.check(tokens["bob"]) == Identity("bob", "steer")


def test_fails_closed_when_file_opens_up(folder):
    d, tokens = folder
    run = mint_run_token()
    auth = TokenAuth(d, extra={"local": (run, "steer")})
    os.chmod(d / TOKENS_FILE, 0o644)
    assert auth.check(tokens["alice"]) is None
    assert auth.check(run) == Identity("local", "steer")  # the run's own token still works
    os.chmod(d / TOKENS_FILE, 0o600)
    assert auth.check(tokens["alice"]) == Identity("alice", "steer")
    (d / TOKENS_FILE).unlink()
    assert auth.check(tokens["alice"]) is None
    assert auth.names() == ["local"]


def test_extra_run_token(folder):
    d, tokens = folder
    run = mint_run_token()
    assert run.startswith("rtn_") and run != mint_run_token()
    alone = TokenAuth(None, extra={"local": (run, "steer")})
    assert alone.check(run) == Identity("local", "steer")
    assert alone.check(tokens["alice"]) is None
    both = TokenAuth(d, extra={"local": (run, "steer"), "watcher": (mint_run_token(), "observer")})
    assert both.check(run) == Identity("local", "steer")
    assert both.check(tokens["bob"]) == Identity("bob", "observer")
    for bad in ({"local": ("", "steer")}, {"local": ("x" * (MAX_TOKEN_LEN + 1), "steer")},
                {"local": ("tok en", "steer")}, {"local": (run, "admin")}, {"lo cal": (run, "steer")}):
        with pytest.raises(ConfigError):
            TokenAuth(None, extra=bad)
    assert TokenAuth().check(run) is None  # no tokens at all: nothing gets in


def test_concurrent_checks_and_revoke(folder):
    """Checks from many threads while tokens are revoked and created: never an error."""
    d, tokens = folder
    auth = TokenAuth(d)
    errors: list[BaseException] = []
    stop = threading.Event()

    def hammer():
        try:
            while not stop.is_set():
                assert auth.check(tokens["bob"]) == Identity("bob", "observer")
                auth.check(tokens["alice"])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(20):
            create_token(d, f"n{i}", "steer")
        revoke_token(d, "alice")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    _touch_later(d / TOKENS_FILE)
    assert auth.check(tokens["alice"]) is None


def test_hostile_strings_never_raise_nor_authenticate(folder):
    d, tokens = folder
    auth = TokenAuth(d, extra={"local": (mint_run_token(), "steer")})

    @settings(max_examples=300, deadline=None)
    @given(st.one_of(st.text(), st.text(alphabet=st.characters(codec="ascii"), min_size=40, max_size=60),
                     st.text(min_size=MAX_TOKEN_LEN - 2, max_size=MAX_TOKEN_LEN + 2),
                     st.from_regex(r"rtn_[A-Za-z0-9_-]{43}", fullmatch=True)))
    def check(text):
        assert auth.check(text) is None
        assert bearer_token("Bearer " + text) is None or auth.check(bearer_token("Bearer " + text)) is None

    check()


# -- TLS ---------------------------------------------------------------------------

@pytest.fixture
def tls(tmp_path):
    """A certificate for localhost and 127.0.0.1; returns (cert, key)."""
    return create_tls(tmp_path / "tls", ["localhost", "127.0.0.1"])


def test_create_tls(tls, tmp_path):
    from cryptography import x509

    cert, key = tls
    assert cert.name == TLS_CERT_FILE and key.name == TLS_KEY_FILE
    check_tls(cert, key)
    c = x509.load_pem_x509_certificate(cert.read_bytes())
    san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    left = c.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=364) < left <= datetime.timedelta(days=365)
    with pytest.raises(ConfigError) as exc:
        create_tls(cert.parent, ["localhost"])
    assert "--force" in _one_line(exc)
    cert2, key2 = create_tls(cert.parent, ["::1", "host.example.org"], days=2, force=True)
    check_tls(cert2, key2)
    for hosts in ([], ["not a host"], ["a..b"], [""]):
        with pytest.raises(ConfigError):
            create_tls(tmp_path / "bad", hosts)
    with pytest.raises(ConfigError):
        create_tls(tmp_path / "bad", ["localhost"], days=0)


def test_check_tls_refusals(tls, tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    cert, key = tls
    other_cert, other_key = create_tls(tmp_path / "other", ["localhost"])
    with pytest.raises(ConfigError) as exc:
        check_tls(cert, other_key)
    assert "is not the key of" in _one_line(exc)
    with pytest.raises(ConfigError) as exc:
        check_tls(tmp_path / "none.pem", key)
    assert "missing" in _one_line(exc)
    with pytest.raises(ConfigError) as exc:
        check_tls(cert, tmp_path / "none.pem")
    assert "missing" in _one_line(exc)
    with pytest.raises(ConfigError) as exc:
        check_tls(key, key)  # a key where the certificate should be
    assert "not a PEM certificate" in _one_line(exc)
    with pytest.raises(ConfigError) as exc:
        check_tls(cert, cert)  # a certificate where the key should be (0644: refused for its mode first)
    _one_line(exc)

    os.chmod(key, 0o640)
    with pytest.raises(ConfigError) as exc:
        check_tls(cert, key)
    assert f"chmod 600 {key}" in _one_line(exc)
    os.chmod(key, 0o600)

    # an encrypted key, and an expired certificate for the same key
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    enc = tmp_path / "enc.pem"
    enc.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.BestAvailableEncryption(b"secret")))
    os.chmod(enc, 0o600)
    with pytest.raises(ConfigError) as exc:
        check_tls(cert, enc)
    assert "encrypted" in _one_line(exc)
    c = x509.load_pem_x509_certificate(cert.read_bytes())
    now = datetime.datetime.now(datetime.UTC)
    old = (x509.CertificateBuilder().subject_name(c.subject).issuer_name(c.subject).public_key(private.public_key())
           .serial_number(x509.random_serial_number())
           .not_valid_before(now - datetime.timedelta(days=10)).not_valid_after(now - datetime.timedelta(days=1))
           .sign(private, hashes.SHA256()))
    expired = tmp_path / "expired.pem"
    expired.write_bytes(old.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(ConfigError) as exc:
        check_tls(expired, key)
    assert "expired on" in _one_line(exc)


class _TlsServer:
    """A TLS server on 127.0.0.1 (a thread) that answers each handshake with b"ok"."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)  # accept wakes up to see close(): closing a socket does not interrupt a blocked accept
        self.closed = False
        self.port = self.sock.getsockname()[1]
        self.failures: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            conn.settimeout(60)
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError) as exc:
                self.failures.append(type(exc).__name__)
                conn.close()

    def close(self) -> None:
        self.closed = True
        self.thread.join(timeout=60)
        self.sock.close()


def _hello(ctx: ssl.SSLContext, port: int, server_hostname: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as raw, \
            ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
        return tls.recv(2)


def test_tls_handshake(tls, tmp_path):
    cert, key = tls
    server = _TlsServer(cert, key)
    try:
        trusting = ssl.create_default_context(cafile=str(cert))
        assert trusting.check_hostname and trusting.verify_mode == ssl.CERT_REQUIRED
        assert _hello(trusting, server.port, "127.0.0.1") == b"ok"  # the IP address in the certificate
        assert _hello(trusting, server.port, "localhost") == b"ok"
        strict = ssl.create_default_context(cafile=str(cert))
        strict.verify_flags |= ssl.VERIFY_X509_STRICT  # the default of Python >= 3.13
        assert _hello(strict, server.port, "127.0.0.1") == b"ok"

        with pytest.raises(ssl.SSLCertVerificationError):  # a name the certificate does not hold
            _hello(trusting, server.port, "example.org")
        with pytest.raises(ssl.SSLCertVerificationError):  # the system CAs only
            _hello(ssl.create_default_context(), server.port, "127.0.0.1")
        other_cert, _ = create_tls(tmp_path / "other", ["localhost", "127.0.0.1"])
        with pytest.raises(ssl.SSLCertVerificationError):  # another certificate for the same names
            _hello(ssl.create_default_context(cafile=str(other_cert)), server.port, "127.0.0.1")
    finally:
        server.close()
    assert len(server.failures) == 3


# -- exposure ----------------------------------------------------------------------

def test_check_exposure(folder, tls, tmp_path):
    d, _ = folder
    cert, key = tls
    for host in ("127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost"):
        check_exposure(host, None, None, None)  # loopback: the run's own token is enough
    check_exposure("0.0.0.0", cert, key, d)
    check_exposure("192.168.1.20", cert, key, d)

    with pytest.raises(ConfigError) as exc:
        check_exposure("0.0.0.0", None, None, None)
    assert _one_line(exc) == ("control.host 0.0.0.0 is not loopback: it needs tls_cert and tls_key (rtneuro keys DIR --tls HOST) "
                              "and a tokens folder with at least one token (rtneuro keys DIR --token NAME --role steer)")
    with pytest.raises(ConfigError) as exc:
        check_exposure("0.0.0.0", cert, None, d)
    assert "tls_cert and tls_key" in _one_line(exc) and "tokens folder" not in str(exc.value)
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)
    with pytest.raises(ConfigError) as exc:
        check_exposure("10.0.0.1", cert, key, empty)
    assert "at least one token" in _one_line(exc) and f"{empty} has none" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        check_exposure("10.0.0.1", cert, key, tmp_path / "nowhere")
    assert "at least one token" in _one_line(exc)
    other_cert, _ = create_tls(tmp_path / "other", ["localhost"])
    with pytest.raises(ConfigError) as exc:
        check_exposure("0.0.0.0", other_cert, key, d)
    assert "is not the key of" in _one_line(exc)
    os.chmod(d / TOKENS_FILE, 0o644)
    with pytest.raises(ConfigError) as exc:
        check_exposure("0.0.0.0", cert, key, d)
    assert "chmod 600" in _one_line(exc)
