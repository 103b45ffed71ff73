from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from soci.errors import InvalidArgument
from soci.registry.credentials import (
    ChainCredentials,
    Credentials,
    DockerConfigCredentials,
    EnvironmentCredentials,
    StaticCredentials,
    default_credentials,
    docker_config_path,
    parse_user,
)

SECRET = "s3cr3t-value"


def write_config(tmp_path: Path, document: dict[str, object]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(document))
    return path


def make_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, answers: dict[str, dict[str, str]]) -> Path:
    """A docker-credential-<name> program answering ``get`` from ``answers`` (server → JSON), logging calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    calls = tmp_path / f"{name}.calls"
    program = bin_dir / f"docker-credential-{name}"
    program.write_text(
        "#!/usr/bin/env python3\n"
        "import json, sys\n"
        f"answers = {answers!r}\n"
        "server = sys.stdin.read().strip()\n"
        f"open({str(calls)!r}, 'a').write(sys.argv[1] + ' ' + server + '\\n')\n"
        "if server not in answers:\n"
        "    print('credentials not found in native keychain'); sys.exit(1)\n"
        "print(json.dumps(answers[server]))\n"
    )
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


def test_credentials_repr_hides_secrets() -> None:
    for creds in (Credentials("me", SECRET), Credentials(identity_token=SECRET)):
        assert SECRET not in repr(creds) and SECRET not in str(creds) and SECRET not in f"{creds}"


def test_parse_user() -> None:
    assert parse_user("me:pa:ss") == Credentials("me", "pa:ss")
    assert parse_user("me") == Credentials("me", "")
    with pytest.raises(InvalidArgument):
        parse_user(":pw")


async def test_static_and_environment() -> None:
    assert await StaticCredentials(Credentials("a", "b")).get("any") == Credentials("a", "b")
    per_host = StaticCredentials({"h:1": Credentials("a", "b")})
    assert await per_host.get("h:1") == Credentials("a", "b")
    assert await per_host.get("other") is None
    env = EnvironmentCredentials({"SOCI_USERNAME": "u", "SOCI_PASSWORD": "p"})
    assert await env.get("x") == Credentials("u", "p")
    assert await EnvironmentCredentials({}).get("x") is None


async def test_docker_config_auths_forms(tmp_path: Path) -> None:
    encoded = base64.b64encode(b"alice:" + SECRET.encode()).decode()
    path = write_config(
        tmp_path,
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pw").decode()},
                "r.example:5000": {"auth": encoded},
                "https://other.example/v2/": {"username": "bob", "password": "pw2"},
                "token.example": {"identitytoken": "refresh-me"},
                "empty.example": {},
            }
        },
    )
    provider = DockerConfigCredentials(path)
    assert await provider.get("r.example:5000") == Credentials("alice", SECRET)
    assert await provider.get("other.example") == Credentials("bob", "pw2")
    assert await provider.get("docker.io") == Credentials("hub", "pw")
    assert await provider.get("registry-1.docker.io") == Credentials("hub", "pw")
    assert await provider.get("token.example") == Credentials(identity_token="refresh-me")
    assert await provider.get("empty.example") is None
    assert await provider.get("unknown.example") is None
    assert await DockerConfigCredentials(tmp_path / "missing.json").get("r.example:5000") is None


async def test_malformed_auth_is_an_error_without_the_secret(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"auths": {"h": {"auth": base64.b64encode(SECRET.encode()).decode()}}})
    with pytest.raises(InvalidArgument) as caught:
        await DockerConfigCredentials(path).get("h")
    assert SECRET not in str(caught.value)


async def test_cred_helpers_and_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = make_helper(
        tmp_path,
        monkeypatch,
        "fake",
        {
            "r.example": {"ServerURL": "r.example", "Username": "helper-user", "Secret": SECRET},
            "https://index.docker.io/v1/": {"ServerURL": "hub", "Username": "<token>", "Secret": "idtoken"},
        },
    )
    path = write_config(
        tmp_path,
        {"credHelpers": {"r.example": "fake"}, "credsStore": "fake", "auths": {"inline.example": {"auth": "dTpw"}}},
    )
    provider = DockerConfigCredentials(path)
    assert await provider.get("r.example") == Credentials("helper-user", SECRET)
    assert await provider.get("r.example") == Credentials("helper-user", SECRET)  # cached: one call
    assert await provider.get("docker.io") == Credentials(identity_token="idtoken")
    assert await provider.get("inline.example") == Credentials("u", "p")  # inline wins over credsStore
    assert await provider.get("nothing.example") is None
    assert calls.read_text().splitlines() == [
        "get r.example",
        "get https://index.docker.io/v1/",
        "get nothing.example",
    ]


async def test_missing_helper_program_gives_no_credentials(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"credsStore": "does-not-exist-anywhere"})
    assert await DockerConfigCredentials(path).get("r.example") is None


async def test_default_chain_order(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"auths": {"h": {"username": "cfg", "password": "c"}}})
    env = {"DOCKER_CONFIG": str(tmp_path)}
    assert docker_config_path(env) == path
    assert await default_credentials(environ=env).get("h") == Credentials("cfg", "c")
    env_user = {**env, "SOCI_USERNAME": "env", "SOCI_PASSWORD": "e"}
    assert await default_credentials(environ=env_user).get("h") == Credentials("env", "e")
    assert await default_credentials("cli:x", environ=env_user).get("h") == Credentials("cli", "x")
    chain = ChainCredentials(StaticCredentials({}), StaticCredentials({"h": Credentials("second", "")}))
    assert await chain.get("h") == Credentials("second", "")
