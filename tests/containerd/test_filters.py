"""containerd filter expressions, as containerd and ctr send them to a snapshotter."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from soci.containerd.filters import map_field, parse_filter, parse_filters
from soci.errors import InvalidArgument

INFO = {"name": "default/4/sha256:abc", "parent": "default/3/sha256:def", "kind": "committed"}
LABELS = {"containerd.io/snapshot.ref": "sha256:abc", "team": "storage", "a.b": "dotted"}


def lookup(path: Sequence[str]) -> str | None:
    if path[0] == "labels":
        return map_field(path[1:], LABELS)
    return INFO.get(path[0]) if len(path) == 1 else None


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ('labels."containerd.io/snapshot.ref"==sha256:abc,parent=="default/3/sha256:def"', True),
        ('labels."containerd.io/snapshot.ref"==sha256:abc,parent==""', False),
        ("kind==committed", True),
        ("kind!=committed", False),
        ("labels.team", True),
        ("labels.missing", False),
        ("labels.missing!=x", True),
        ("labels.a.b==dotted", True),
        ("name~=/^default\\/4\\//", True),
        ("name~=|sha256:a.c$|", True),
        ('name~="^other"', False),
        (" kind == committed , labels.team == storage ", True),
        ('labels.team=="stor\\u0061ge"', True),
    ],
)
def test_selectors(text: str, matches: bool) -> None:
    assert parse_filter(text).matches(lookup) is matches


def test_a_list_of_filters_is_an_or_and_empty_matches_all() -> None:
    assert parse_filters(["kind==view", "labels.team==storage"]).matches(lookup)
    assert not parse_filters(["kind==view", "labels.team==other"]).matches(lookup)
    assert parse_filters([]).matches(lookup) and parse_filters(["", "  "]).matches(lookup)


@pytest.mark.parametrize(
    "text", ["==x", "name==", 'labels."unterminated==x', "name~=/[/", "name==a b", "name=x", "labels..x"]
)
def test_malformed_filters_are_invalid_arguments(text: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid filter"):
        parse_filter(text)
