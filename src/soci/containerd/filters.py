"""containerd's filter syntax, as ``ctr`` and containerd's metadata layer send it in List calls.

    filter   := selector ("," selector)*          every selector must match
    selector := fieldpath [("==" | "!=" | "~=") value]
    fieldpath:= field ("." field)*                 field: [A-Za-z0-9_]+ or a "quoted" string
    value    := "quoted" | /regexp/ | |regexp| | bare (no comma, no space)

A list of filters matches when any one filter matches; an empty list (or empty strings) matches all.
Pure: matching goes through a field lookup function, so any object can be filtered.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from soci.errors import InvalidArgument

FieldLookup = Callable[[Sequence[str]], "str | None"]
"""Value of a field path, or None when the object has no such field."""

_FIELD_CHARS = re.compile(r"[A-Za-z0-9_]+")
_OPERATORS = ("==", "!=", "~=")


@dataclass(frozen=True, slots=True)
class Selector:
    fieldpath: tuple[str, ...]
    operator: str = ""  # "" means "field is present"
    value: str = ""
    _regex: re.Pattern[str] | None = field(default=None, compare=False)

    def matches(self, lookup: FieldLookup) -> bool:
        value = lookup(self.fieldpath)
        if self.operator == "":
            return value is not None
        if self.operator == "==":
            return value is not None and value == self.value
        if self.operator == "!=":
            return value != self.value
        assert self._regex is not None
        return self._regex.search(value or "") is not None


@dataclass(frozen=True, slots=True)
class Filter:
    """Selectors joined by commas: all must match."""

    selectors: tuple[Selector, ...]

    def matches(self, lookup: FieldLookup) -> bool:
        return all(s.matches(lookup) for s in self.selectors)


@dataclass(frozen=True, slots=True)
class FilterSet:
    """Filters given as separate strings: any may match (none given: everything matches)."""

    filters: tuple[Filter, ...]

    def matches(self, lookup: FieldLookup) -> bool:
        return not self.filters or any(f.matches(lookup) for f in self.filters)


def parse_filters(texts: Sequence[str]) -> FilterSet:
    """Parse the ``filters`` field of a List request; blank strings are ignored.

    Raises:
        InvalidArgument: a filter is malformed (the message quotes it and names the position).
    """
    return FilterSet(tuple(parse_filter(t) for t in texts if t.strip()))


def parse_filter(text: str) -> Filter:
    parser = _Parser(text)
    selectors = [parser.selector()]
    while parser.accept(","):
        selectors.append(parser.selector())
    parser.skip_space()
    if parser.pos != len(text):
        parser.fail("unexpected input")
    return Filter(tuple(selectors))


def map_field(path: Sequence[str], values: Mapping[str, str]) -> str | None:
    """Look up ``labels.<k>``-style paths: the rest of the path, joined by dots, is the key."""
    if not path:
        return None
    return values.get(".".join(path))


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, why: str) -> None:
        raise InvalidArgument(f"invalid filter {self.text!r}: {why} at position {self.pos}")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def accept(self, token: str) -> bool:
        self.skip_space()
        if self.text.startswith(token, self.pos):
            self.pos += len(token)
            return True
        return False

    def selector(self) -> Selector:
        path = [self.field()]
        while self.accept("."):
            path.append(self.field())
        self.skip_space()
        for operator in _OPERATORS:
            if self.accept(operator):
                value = self.value(allow_regex_quotes=operator == "~=")
                regex = None
                if operator == "~=":
                    try:
                        regex = re.compile(value)
                    except re.error as exc:
                        self.fail(f"bad regular expression {value!r} ({exc})")
                return Selector(tuple(path), operator, value, regex)
        return Selector(tuple(path))

    def field(self) -> str:
        self.skip_space()
        if self.text.startswith('"', self.pos):
            return self.quoted('"')
        match = _FIELD_CHARS.match(self.text, self.pos)
        if match is None:
            self.fail("expected a field name")
            raise AssertionError("unreachable")
        self.pos = match.end()
        return match.group()

    def value(self, *, allow_regex_quotes: bool) -> str:
        self.skip_space()
        if self.text.startswith('"', self.pos):
            return self.quoted('"')
        if allow_regex_quotes and self.pos < len(self.text) and self.text[self.pos] in "/|":
            return self.quoted(self.text[self.pos])
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] != "," and not self.text[self.pos].isspace():
            self.pos += 1
        if self.pos == start:
            self.fail("expected a value")
        return self.text[start : self.pos]

    def quoted(self, quote: str) -> str:
        start = self.pos
        self.pos += 1
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\":
                self.pos += 2
                continue
            if char == quote:
                self.pos += 1
                body = self.text[start + 1 : self.pos - 1]
                if quote != '"':
                    return body.replace("\\" + quote, quote)
                try:
                    return str(ast.literal_eval('"' + body + '"'))
                except (SyntaxError, ValueError):
                    self.pos = start
                    self.fail("bad escape in quoted string")
            self.pos += 1
        self.pos = start
        self.fail("unterminated quoted string")
        raise AssertionError("unreachable")
