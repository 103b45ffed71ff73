"""Start Debian's ``docker-registry`` (distribution 2.8) on loopback for tests.

Modes: plain HTTP; TLS with a throwaway CA; htpasswd (Basic) auth; Bearer token auth served by an
in-process token server issuing short-lived RS256 JWTs; pull-through cache (``proxy_remote``) in front of
another registry. The process is stopped by its PID. Sync helpers push blobs, manifests and small images.

    with RegistryServer(tls=True, auth="htpasswd") as reg:
        reg.url, reg.host, reg.pid, reg.ca_cert
        digest = reg.push_blob("test/repo", b"data")
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

AuthMode = Literal["none", "htpasswd", "token"]

DEFAULT_USERS: Mapping[str, str] = {"soci": "soci-test-password"}
TOKEN_SERVICE = "soci-test-registry"
TOKEN_ISSUER = "soci-test-token-issuer"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
_START_TIMEOUT_SEC = 15.0
_STOP_TIMEOUT_SEC = 5.0


def registry_available() -> bool:
    """Whether ``docker-registry`` is installed (tests skip otherwise)."""
    return shutil.which("docker-registry") is not None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# DER prefix of DigestInfo for SHA-256 (RFC 8017 §9.2, note 1)
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


def openssl(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip().splitlines()[-1:]}")
    return result.stdout


@dataclass(frozen=True)
class TlsFiles:
    """A CA, and a server certificate for 127.0.0.1/localhost and a client certificate signed by it."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls_files(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> TlsFiles:
    """A fresh CA (EC P-256) and a server certificate whose SANs are ``hosts``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = directory / "ca.crt", directory / "ca.key"
    server_cert, server_key, csr = directory / "server.crt", directory / "server.key", directory / "server.csr"
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl(
        "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca_cert), "-days", "2",
        "-subj", "/CN=soci test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    openssl("req", "-new", *ec, "-keyout", str(server_key), "-out", str(csr), "-subj", "/CN=localhost")
    sans = ",".join(f"IP:{h}" if re.fullmatch(r"[0-9.]+|[0-9a-f:]+", h) else f"DNS:{h}" for h in hosts)
    extensions = directory / "server.ext"
    extensions.write_text(
        f"subjectAltName={sans}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(server_cert), "-days", "2", "-extfile", str(extensions),
    )  # fmt: skip
    client_cert, client_key, client_csr = directory / "client.crt", directory / "client.key", directory / "client.csr"
    openssl("req", "-new", *ec, "-keyout", str(client_key), "-out", str(client_csr), "-subj", "/CN=soci test client")
    client_extensions = directory / "client.ext"
    client_extensions.write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    openssl(
        "x509", "-req", "-in", str(client_csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(client_cert), "-days", "2", "-extfile", str(client_extensions),
    )  # fmt: skip
    return TlsFiles(ca_cert, ca_key, server_cert, server_key, client_cert, client_key)


@dataclass(frozen=True)
class RsaSigner:
    """An RSA key with a self-signed certificate, signing RS256 JWTs."""

    cert: Path
    modulus: int = field(repr=False)
    private_exponent: int = field(repr=False)

    @classmethod
    def create(cls, directory: Path, common_name: str = "soci test token issuer") -> RsaSigner:
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / "token.crt", directory / "token.key"
        openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
            "-days", "2", "-subj", f"/CN={common_name}",
        )  # fmt: skip
        text = openssl("rsa", "-in", str(key), "-noout", "-text")
        return cls(cert, _hex_block(text, "modulus"), _hex_block(text, "privateExponent"))

    @property
    def cert_der_base64(self) -> str:
        """The certificate as the standard-base64 DER string JWT ``x5c`` headers carry."""
        lines = self.cert.read_text().strip().splitlines()
        return "".join(line for line in lines if not line.startswith("-----"))

    def sign(self, message: bytes) -> bytes:
        size = (self.modulus.bit_length() + 7) // 8
        digest_info = _SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
        padded = b"\x00\x01" + b"\xff" * (size - len(digest_info) - 3) + b"\x00" + digest_info
        return pow(int.from_bytes(padded, "big"), self.private_exponent, self.modulus).to_bytes(size, "big")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hex_block(text: str, name: str) -> int:
    match = re.search(rf"^{name}:\s*\n((?:\s+[0-9a-f:]+\n?)+)", text, re.MULTILINE)
    if not match:
        raise RuntimeError(f"openssl rsa -text output has no {name}")
    return int(re.sub(r"[\s:]", "", match.group(1)), 16)


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash for htpasswd (docker-registry accepts only bcrypt), at the lowest cost to stay fast."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt  # libxcrypt does bcrypt; the module is gone in Python 3.13

            hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
            if hashed and hashed.startswith("$2"):
                return hashed
        except ImportError:
            pass
    try:
        import bcrypt  # type: ignore[import-not-found]

        return str(bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode())
    except ImportError as exc:
        raise RuntimeError("htpasswd needs bcrypt: neither the crypt module nor the bcrypt package works") from exc


@dataclass
class TokenRequest:
    """What one call to the token server asked for (for assertions)."""

    subject: str
    scopes: list[str]
    granted: list[dict[str, Any]]
    expired: bool


class TokenServer:
    """Docker token auth service: ``GET /token?service=&scope=`` (Basic or anonymous) and OAuth2 ``POST /token``.

    Users get pull, push and delete on every repository they ask for; anonymous callers get pull only when
    ``anonymous_pull``. ``expire_next(n)`` makes the next n tokens already expired (past the registry's
    60 s leeway) so a client must come back for another one.
    """

    def __init__(
        self,
        signer: RsaSigner,
        *,
        users: Mapping[str, str],
        identity_tokens: Mapping[str, str] | None = None,
        ttl_sec: int = 60,
        anonymous_pull: bool = False,
    ) -> None:
        self.signer = signer
        self.users = dict(users)
        self.identity_tokens = dict(identity_tokens or {})
        self.ttl_sec = ttl_sec
        self.anonymous_pull = anonymous_pull
        self.requests: list[TokenRequest] = []
        self.issued_tokens: list[str] = []
        self._expire_next = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def expire_next(self, count: int = 1) -> None:
        with self._lock:
            self._expire_next += count

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                subject = owner._basic_subject(self.headers.get("Authorization"))
                if subject is None:
                    return self._answer(401, {"details": "bad credentials"})
                scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
                self._answer(*owner._issue(subject, scopes))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                refresh = (form.get("refresh_token") or [""])[0]
                subject = owner.identity_tokens.get(refresh)
                if form.get("grant_type") != ["refresh_token"] or subject is None:
                    return self._answer(401, {"details": "bad refresh token"})
                scopes = [s for value in form.get("scope", []) for s in value.split(" ") if s]
                self._answer(*owner._issue(subject, scopes))

            def _answer(self, status: int, document: Mapping[str, Any]) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="token-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def mint(self, subject: str, access: Sequence[Mapping[str, Any]], *, expired: bool = False) -> str:
        """A signed registry token granting ``access`` (list of ``{type, name, actions}``)."""
        now = int(time.time())
        exp, nbf = (now - 300, now - 600) if expired else (now + self.ttl_sec, now - 5)
        claims = {
            "iss": TOKEN_ISSUER,
            "sub": subject,
            "aud": TOKEN_SERVICE,
            "exp": exp,
            "nbf": nbf,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": list(access),
        }
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.signer.cert_der_base64]}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        return f"{signing_input}.{b64url(self.signer.sign(signing_input.encode()))}"

    def _basic_subject(self, authorization: str | None) -> str | None:
        if not authorization:
            return "" if self.anonymous_pull or not self.users else None
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return user if self.users.get(user) == password else None

    def _issue(self, subject: str, scopes: list[str]) -> tuple[int, dict[str, Any]]:
        granted: list[dict[str, Any]] = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) < 3:
                continue
            kind, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
            allowed = {"pull", "push", "delete", "*"} if subject else {"pull"}
            keep = [a for a in actions if a in allowed]
            if keep:
                granted.append({"type": kind, "name": name, "actions": keep})
        with self._lock:
            expired = self._expire_next > 0
            self._expire_next -= 1 if expired else 0
        token = self.mint(subject, granted, expired=expired)
        with self._lock:
            self.requests.append(TokenRequest(subject, scopes, granted, expired))
            self.issued_tokens.append(token)
        issued_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return 200, {"token": token, "access_token": token, "expires_in": self.ttl_sec, "issued_at": issued_at}


class RegistryServer:
    """A ``docker-registry`` process on 127.0.0.1 with a temporary storage directory.

    Args:
        tls: serve HTTPS with a certificate from a throwaway CA (``ca_cert``).
        client_certs: with ``tls``, require clients to present a certificate from that CA
            (``tls_files.client_cert``/``client_key``).
        auth: ``"htpasswd"`` (Basic, bcrypt) or ``"token"`` (Bearer, via ``token_server``).
        users: user → password for both auth modes (default: ``DEFAULT_USERS``).
        identity_tokens: refresh token → user, accepted by the token server's OAuth2 POST.
        token_ttl_sec: ``expires_in`` of issued tokens.
        anonymous_pull: in token mode, let callers without credentials pull.
        proxy_remote: run as a pull-through cache of this registry URL (read-only mirror).
        workdir: where config, storage and logs go (default: a temporary directory, removed on stop).
    """

    def __init__(
        self,
        *,
        tls: bool = False,
        client_certs: bool = False,
        auth: AuthMode = "none",
        users: Mapping[str, str] | None = None,
        identity_tokens: Mapping[str, str] | None = None,
        token_ttl_sec: int = 60,
        anonymous_pull: bool = False,
        proxy_remote: str | None = None,
        workdir: Path | None = None,
        binary: str = "docker-registry",
    ) -> None:
        self.tls = tls or client_certs
        self.client_certs = client_certs
        self.auth: AuthMode = auth
        self.users = dict(users if users is not None else DEFAULT_USERS)
        self.identity_tokens = dict(identity_tokens or {})
        self.token_ttl_sec = token_ttl_sec
        self.anonymous_pull = anonymous_pull
        self.proxy_remote = proxy_remote
        self.binary = binary
        self._given_workdir = workdir
        self.workdir: Path | None = None
        self.port = 0
        self.tls_files: TlsFiles | None = None
        self.token_server: TokenServer | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None

    # ---- lifecycle -----------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self._process is not None, "registry not started"
        return self._process.pid

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``, the registry domain for references and hosts.toml."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def ca_cert(self) -> Path | None:
        return self.tls_files.ca_cert if self.tls_files else None

    @property
    def storage_dir(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "storage"

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "registry.log"

    def start(self) -> RegistryServer:
        if self._given_workdir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="soci-registry-")
            self.workdir = Path(self._tempdir.name)
        else:
            self.workdir = self._given_workdir
            self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            if self.tls:
                self.tls_files = make_tls_files(self.workdir / "tls")
            if self.auth == "token":
                signer = RsaSigner.create(self.workdir / "token")
                self.token_server = TokenServer(
                    signer,
                    users=self.users,
                    identity_tokens=self.identity_tokens,
                    ttl_sec=self.token_ttl_sec,
                    anonymous_pull=self.anonymous_pull,
                )
                self.token_server.start()
            if self.auth == "htpasswd":
                lines = [f"{user}:{bcrypt_hash(password)}" for user, password in self.users.items()]
                (self.workdir / "htpasswd").write_text("\n".join(lines) + "\n")
            for _ in range(3):  # a free port can be taken between probing and binding
                self.port = free_port()
                if self._launch():
                    return self
            raise RuntimeError(f"docker-registry did not start; see {self.log_path}")
        except BaseException:
            self.stop()
            raise

    def _config(self) -> dict[str, Any]:
        assert self.workdir is not None
        http_section: dict[str, Any] = {"addr": self.host, "secret": secrets.token_hex(16)}
        if self.tls_files is not None:
            http_section["tls"] = {
                "certificate": str(self.tls_files.server_cert),
                "key": str(self.tls_files.server_key),
            }
            if self.client_certs:
                http_section["tls"]["clientcas"] = [str(self.tls_files.ca_cert)]
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": http_section,
        }
        if self.auth == "htpasswd":
            config["auth"] = {"htpasswd": {"realm": "soci-test", "path": str(self.workdir / "htpasswd")}}
        elif self.auth == "token":
            assert self.token_server is not None
            config["auth"] = {
                "token": {
                    "realm": self.token_server.url,
                    "service": TOKEN_SERVICE,
                    "issuer": TOKEN_ISSUER,
                    "rootcertbundle": str(self.token_server.signer.cert),
                }
            }
        if self.proxy_remote:
            config["proxy"] = {"remoteurl": self.proxy_remote}
        return config

    def _launch(self) -> bool:
        assert self.workdir is not None
        config_path = self.workdir / "config.yml"
        # JSON is YAML, and needs no YAML library
        config_path.write_text(json.dumps(self._config(), indent=2))
        environment = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        with self.log_path.open("ab") as log_file:
            self._process = subprocess.Popen(
                [self.binary, "serve", str(config_path)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=environment,
            )
        deadline = time.monotonic() + _START_TIMEOUT_SEC
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            if self._answers():
                return True
            time.sleep(0.05)
        self._kill()
        return False

    def _answers(self) -> bool:
        try:
            status, _, _ = self.http_request("GET", "/v2/", timeout=1.0)
        except OSError:
            return False
        return status in (200, 401)

    def stop(self) -> None:
        self._kill()
        if self.token_server is not None:
            self.token_server.stop()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(_STOP_TIMEOUT_SEC)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- helpers for tests ---------------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.tls_files is None:
            return None
        context = ssl.create_default_context(cafile=str(self.tls_files.ca_cert))
        if self.client_certs:
            context.load_cert_chain(str(self.tls_files.client_cert), str(self.tls_files.client_key))
        return context

    def admin_authorization(self, repo: str) -> str | None:
        """An Authorization header value allowing everything on ``repo`` (None without auth)."""
        if self.auth == "htpasswd":
            user, password = next(iter(self.users.items()))
            return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        if self.auth == "token":
            assert self.token_server is not None
            access = [{"type": "repository", "name": repo, "actions": ["pull", "push", "delete"]}]
            return "Bearer " + self.token_server.mint("admin", access)
        return None

    def http_request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        """One plain request to the registry (``target`` a path or URL): ``(status, headers, body)``.

        The headers object looks names up case-insensitively.
        """
        parts = urllib.parse.urlsplit(target)
        host = parts.netloc or self.host
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection: http.client.HTTPConnection
        if self.tls:
            connection = http.client.HTTPSConnection(host, timeout=timeout, context=self.ssl_context())
        else:
            connection = http.client.HTTPConnection(host, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=dict(headers or {}))
            response = connection.getresponse()
            return response.status, response.msg, response.read()
        finally:
            connection.close()

    def _repo_request(
        self, method: str, repo: str, target: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        all_headers = dict(headers or {})
        authorization = self.admin_authorization(repo)
        if authorization:
            all_headers["Authorization"] = authorization
        return self.http_request(method, target, body, all_headers)

    def push_blob(self, repo: str, data: bytes) -> str:
        """Upload ``data`` as a blob of ``repo`` (monolithic) and return its digest."""
        digest = sha256_digest(data)
        status, headers, body = self._repo_request("POST", repo, f"/v2/{repo}/blobs/uploads/", b"")
        if status != 202:
            raise RuntimeError(f"blob upload to {repo} not started: {status} {body[:200]!r}")
        location = headers.get("Location") or ""
        separator = "&" if "?" in location else "?"
        target = f"{location}{separator}digest={urllib.parse.quote(digest)}"
        status, _, body = self._repo_request("PUT", repo, target, data, {"Content-Type": "application/octet-stream"})
        if status != 201:
            raise RuntimeError(f"blob upload to {repo} failed: {status} {body[:200]!r}")
        return digest

    def push_manifest(self, repo: str, reference: str, data: bytes, media_type: str = OCI_MANIFEST) -> str:
        """Upload a manifest under a tag or digest and return its digest."""
        status, _, body = self._repo_request(
            "PUT", repo, f"/v2/{repo}/manifests/{reference}", data, {"Content-Type": media_type}
        )
        if status != 201:
            raise RuntimeError(f"manifest upload to {repo}:{reference} failed: {status} {body[:200]!r}")
        return sha256_digest(data)

    def push_image(
        self, repo: str, tag: str, layers: Sequence[bytes], *, layer_media_type: str = OCI_LAYER_GZIP
    ) -> tuple[str, bytes]:
        """Push an OCI image (empty config, the given layer blobs) under ``tag``: ``(digest, manifest bytes)``."""
        config = b"{}"
        config_digest = self.push_blob(repo, config)
        descriptors = [
            {"mediaType": layer_media_type, "digest": self.push_blob(repo, layer), "size": len(layer)}
            for layer in layers
        ]
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_EMPTY_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": descriptors,
        }
        data = json.dumps(manifest, separators=(",", ":")).encode()
        return self.push_manifest(repo, tag, data), data

    def completed_gets(self, kind: str, reference: str) -> int:
        """Completed GETs of ``/v2/<repo>/<kind>/<reference>`` (kind: blobs or manifests), from the request log."""
        uri = re.compile(rf"http\.request\.uri=\"?/v2/[^ ]*/{re.escape(kind)}/{re.escape(reference)}(?:[\" ?]|$)")
        return sum(
            1
            for line in self.log_path.read_text().splitlines()
            if 'msg="response completed' in line and "http.request.method=GET" in line and uri.search(line)
        )

    def bytes_served(self, digest: str) -> int:
        """Blob bytes this registry has sent for ``digest``, from its request log."""
        total = 0
        for line in self.log_path.read_text().splitlines():
            if 'msg="response completed' in line and f"/blobs/{digest}" in line:
                written = re.search(r"http\.response\.written=(\d+)", line)
                total += int(written.group(1)) if written else 0
        return total

    def write_hosts_toml(
        self, hosts_dir: Path, *, mirrors: Sequence[str] = (), server: str | None = None, domain: str | None = None
    ) -> Path:
        """Write ``<hosts_dir>/<domain>/hosts.toml`` pointing at this registry (with its CA when TLS)."""
        return write_hosts_toml(
            hosts_dir,
            domain or self.host,
            server=server or self.url,
            mirrors=mirrors,
            ca=self.ca_cert,
        )


def write_hosts_toml(
    hosts_dir: Path,
    domain: str,
    *,
    server: str,
    mirrors: Sequence[str] = (),
    ca: Path | None = None,
    capabilities: Sequence[str] = ("pull", "resolve"),
    skip_verify: bool = False,
) -> Path:
    """A containerd ``hosts.toml`` for ``domain``: ``mirrors`` in order, then ``server``."""
    directory = hosts_dir / domain
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f'server = "{server}"']
    if ca is not None:
        lines.append(f'ca = "{ca}"')
    if skip_verify:
        lines.append("skip_verify = true")
    for mirror in mirrors:
        lines += ["", f'[host."{mirror}"]', f"capabilities = {json.dumps(list(capabilities))}"]
        if ca is not None:
            lines.append(f'ca = "{ca}"')
    path = directory / "hosts.toml"
    path.write_text("\n".join(lines) + "\n")
    return path
