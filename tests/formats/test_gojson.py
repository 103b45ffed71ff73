from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from soci.errors import FormatError
from soci.formats import gojson
from soci.formats.gojson import GoMap


def test_go_escapes_html_and_line_separators() -> None:
    assert gojson.marshal("a<b>&c\u2028d\u2029") == b'"a\\u003cb\\u003e\\u0026c\\u2028d\\u2029"'


def test_control_characters_use_go_forms() -> None:
    assert gojson.marshal('\n\r\t\x01\x1f"\\') == b'"\\n\\r\\t\\u0001\\u001f\\"\\\\"'


def test_non_ascii_is_written_raw() -> None:
    assert gojson.marshal("é漢") == '"é漢"'.encode()


def test_maps_sort_keys_bytewise_structs_keep_order() -> None:
    value = {"z": 1, "a": GoMap({"b": "x", "B": "y", "a": "z", "é": "1", "f": "2"})}
    assert gojson.marshal(value) == b'{"z":1,"a":{"B":"y","a":"z","b":"x","f":"2","\xc3\xa9":"1"}}'


def test_nil_slice_is_null_and_empty_slice_is_array() -> None:
    assert gojson.marshal({"a": None, "b": []}) == b'{"a":null,"b":[]}'


@given(st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
))  # fmt: skip
def test_output_is_valid_json_with_same_value(value: object) -> None:
    def as_gomap(v: object) -> object:
        if isinstance(v, dict):
            return GoMap({k: as_gomap(x) for k, x in v.items()})
        if isinstance(v, list):
            return [as_gomap(x) for x in v]
        return v

    encoded = gojson.marshal(as_gomap(value))
    assert json.loads(encoded) == value


def test_field_lookup_is_case_insensitive_like_go() -> None:
    assert gojson.field({"MediaType": "x"}, "mediaType") == "x"
    assert gojson.field({"mediaType": "exact", "MEDIATYPE": "fold"}, "mediaType") == "exact"
    assert gojson.field({}, "mediaType") is None


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


_tricky_strings = st.text(alphabet='[]{}"\\ab', max_size=12)
_nested = st.recursive(
    _tricky_strings | st.integers(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_tricky_strings, inner, max_size=3),
    max_leaves=40,
)


@given(_nested, st.integers(min_value=0, max_value=6))
def test_depth_check_counts_only_brackets_outside_strings(value: object, limit: int) -> None:
    data = json.dumps(value).encode()
    try:
        gojson.check_depth(data, "doc", limit)
    except FormatError:
        assert _depth(value) > limit
    else:
        assert _depth(value) <= limit
