"""Which load order a mount uses: the snapshot label first, then the daemon's rules, then its default."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

NONE: Final = "none"
"""Label value that turns replay off for a pull, whatever the rules say."""


@dataclass(frozen=True, slots=True)
class Rule:
    """``image`` is a glob on the image reference, ``namespace`` a containerd namespace; empty matches all."""

    name: str
    image: str = ""
    namespace: str = ""

    def matches(self, image_ref: str, namespace: str) -> bool:
        return (not self.image or fnmatch.fnmatchcase(image_ref, self.image)) and (
            not self.namespace or self.namespace == namespace
        )


@dataclass(frozen=True, slots=True)
class Choice:
    name: str
    reason: str
    """``label``, ``rule <n>`` (1-based) or ``default``."""


def choose(label: str, image_ref: str, namespace: str, rules: Sequence[Rule] = (), default: str = "") -> Choice | None:
    """The load order for a mount, or None (no replay)."""
    if label:
        return None if label == NONE else Choice(label, "label")
    for i, rule in enumerate(rules, 1):
        if rule.matches(image_ref, namespace):
            return None if rule.name == NONE else Choice(rule.name, f"rule {i}")
    if default and default != NONE:
        return Choice(default, "default")
    return None
