"""Which load order a mount replays: label, then rules in order, then the default."""

from __future__ import annotations

from soci.loadorder.select import Choice, Rule, choose

RULES = [
    Rule("ml", image="registry.example/python-*", namespace="k8s.io"),
    Rule("none", image="registry.example/python-debug*"),
    Rule("web", image="*/node:*"),
]


def test_label_wins_over_rules_and_default() -> None:
    assert choose("custom", "registry.example/python-ml:1", "k8s.io", RULES, "base") == Choice("custom", "label")


def test_label_none_turns_replay_off() -> None:
    assert choose("none", "registry.example/python-ml:1", "k8s.io", RULES, "base") is None


def test_first_matching_rule_then_default() -> None:
    assert choose("", "registry.example/python-ml:1", "k8s.io", RULES, "base") == Choice("ml", "rule 1")
    assert choose("", "registry.example/python-ml:1", "default", RULES, "base") == Choice("base", "default")
    assert choose("", "docker.io/library/node:20", "default", RULES, "base") == Choice("web", "rule 3")
    assert choose("", "registry.example/python-debug:1", "k8s.io", RULES[1:], "base") is None


def test_nothing_configured_means_no_replay() -> None:
    assert choose("", "any/image:tag", "default") is None
