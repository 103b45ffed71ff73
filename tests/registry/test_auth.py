from __future__ import annotations

from soci.registry.auth import Challenge, parse_www_authenticate


def test_bearer_challenge_with_quoted_params() -> None:
    [challenge] = parse_www_authenticate(
        ['Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"']
    )
    assert challenge == Challenge(
        "bearer",
        {"realm": "https://auth.example/token", "service": "registry.example", "scope": "repository:a/b:pull,push"},
    )


def test_several_challenges_escapes_and_tokens() -> None:
    challenges = parse_www_authenticate(
        [
            'Basic realm="a \\"quoted\\" realm", charset=UTF-8, Bearer realm=https://t.example/x,error="insufficient_scope"'
        ]
    )
    assert [c.scheme for c in challenges] == ["basic", "bearer"]
    assert challenges[0].params == {"realm": 'a "quoted" realm', "charset": "UTF-8"}
    assert challenges[1].params == {"realm": "https://t.example/x", "error": "insufficient_scope"}


def test_multiple_header_values_and_case() -> None:
    challenges = parse_www_authenticate(['BASIC Realm="r"', "Negotiate", 'bearer REALM="x"'])
    assert [(c.scheme, dict(c.params)) for c in challenges] == [
        ("basic", {"realm": "r"}),
        ("negotiate", {}),
        ("bearer", {"realm": "x"}),
    ]


def test_garbage_yields_nothing_usable() -> None:
    assert parse_www_authenticate(["", "   ", ",,,"]) == []
    assert parse_www_authenticate(['"unterminated']) == []
