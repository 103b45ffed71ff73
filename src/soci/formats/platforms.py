"""Platform specifiers as containerd parses, normalises, formats and matches them."""

from __future__ import annotations

import platform as _host

from soci.errors import InvalidArgument
from soci.formats.oci import Platform

_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "i386": "386",
    "i686": "386",
    "386": "386",
    "armhf": "arm",
    "armel": "arm",
    "arm": "arm",
}


def normalize(p: Platform) -> Platform:
    """containerd's platforms.Normalize for the fields SOCI compares."""
    os_name = p.os.lower()
    arch = _ARCH_ALIASES.get(p.architecture.lower(), p.architecture.lower())
    variant = p.variant.lower()
    if arch == "arm64" and variant in ("8", "v8"):
        variant = ""
    elif arch == "arm":
        if variant in ("", "7"):
            variant = "v7"
        elif variant in ("5", "6", "8"):
            variant = "v" + variant
    elif arch == "amd64" and variant == "v1":
        variant = ""
    return Platform(architecture=arch, os=os_name, os_version=p.os_version, os_features=p.os_features, variant=variant)


def default_platform() -> Platform:
    """The platform of this machine (containerd's platforms.DefaultSpec)."""
    return normalize(Platform(architecture=_host.machine(), os="linux"))


def parse_platform(spec: str) -> Platform:
    """Parse ``os[/arch[/variant]]`` or ``arch`` as containerd does; raise InvalidArgument naming ``spec``."""
    parts = spec.strip().split("/")
    if not spec.strip() or any(not part for part in parts) or len(parts) > 3:
        raise InvalidArgument(f"invalid platform {spec!r}: want os/arch[/variant]")
    if len(parts) == 1:
        word = parts[0].lower()
        if word in _ARCH_ALIASES:
            return normalize(Platform(architecture=word, os="linux"))
        return normalize(Platform(architecture=default_platform().architecture, os=word))
    variant = parts[2] if len(parts) == 3 else ""
    return normalize(Platform(architecture=parts[1], os=parts[0], variant=variant))


def format_platform(p: Platform) -> str:
    """``os/arch[/variant]`` (containerd's platforms.Format)."""
    if not p.os:
        return "unknown"
    return "/".join(x for x in (p.os, p.architecture, p.variant) if x)


def matches_strict(want: Platform, have: Platform) -> bool:
    """containerd's platforms.OnlyStrict(want).Match(have): same os, architecture and variant once normalised."""
    a, b = normalize(want), normalize(have)
    return a.os == b.os and a.architecture == b.architecture and a.variant == b.variant
