"""CRI pull credentials: kept per image, handed only to that image's registry, dropped when they expire."""

from __future__ import annotations

from soci.cri.keychain import CriKeychain
from soci.registry.credentials import Credentials

SECRET = Credentials("alice", "s3cret")


def test_credentials_go_only_to_the_images_registry() -> None:
    keychain = CriKeychain()
    keychain.remember("registry.example:5000/team/app:1.0", SECRET)
    assert keychain.credentials("registry.example:5000/team/app:1.0", "registry.example:5000") == SECRET
    # the same repository by another tag finds them; a mirror host never gets them
    assert keychain.credentials("registry.example:5000/team/app:2.0") == SECRET
    assert keychain.credentials("registry.example:5000/team/app:1.0", "mirror.example") is None
    assert keychain.credentials("registry.example:5000/team/other:1.0") is None


def test_docker_hub_names_are_one_registry() -> None:
    keychain = CriKeychain()
    keychain.remember("busybox", SECRET)
    assert keychain.credentials("docker.io/library/busybox:latest", "registry-1.docker.io") == SECRET
    assert keychain.credentials("busybox", "index.docker.io") == SECRET
    assert keychain.credentials("busybox", "quay.io") is None


def test_credentials_expire_after_their_lifetime() -> None:
    now = [100.0]
    keychain = CriKeychain(60.0, clock=lambda: now[0])
    keychain.remember("registry.example/app:1", SECRET)
    now[0] += 59.0
    assert keychain.credentials("registry.example/app:1") == SECRET
    now[0] += 1.0
    assert keychain.credentials("registry.example/app:1") is None
    assert len(keychain) == 0
