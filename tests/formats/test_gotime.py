"""Go time text form: checked against datetime for ordinary dates and against Go itself (golang marker)."""

from __future__ import annotations

import datetime
import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soci.formats.gotime import format_go_time, parse_go_duration, parse_go_time

UTC = datetime.UTC
# 0001-01-01 .. 9999-12-31, the range datetime can check independently
DATETIME_SECONDS = st.integers(min_value=-62_135_596_800 + 86_400, max_value=253_402_300_799 - 86_400)
NANOS = st.one_of(st.just(0), st.integers(min_value=0, max_value=999_999_999), st.sampled_from([1, 10, 500_000_000]))
ZONES = [
    UTC,
    ZoneInfo("America/New_York"),
    ZoneInfo("Asia/Kolkata"),
    ZoneInfo("Europe/Paris"),
    ZoneInfo("Australia/Lord_Howe"),
    ZoneInfo("America/St_Johns"),
    datetime.timezone(datetime.timedelta(hours=-9, minutes=-30)),
    datetime.timezone(datetime.timedelta(hours=14)),
]


def datetime_text(seconds: int, nanos: int, tz: datetime.tzinfo) -> str:
    """The expected text built from datetime: RFC 3339, trimmed nanoseconds, Go's minute-truncated zone."""
    local = datetime.datetime.fromtimestamp(seconds, tz)
    text = local.strftime("%Y-%m-%dT%H:%M:%S").rjust(19, "0")
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    offset = local.utcoffset()
    assert offset is not None
    total = int(offset.total_seconds())
    if total == 0:
        return text + "Z"
    minutes = abs(total) // 60
    sign = "-" if total < 0 and minutes else "+"
    return f"{text}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


@settings(max_examples=300, deadline=None)
@given(seconds=DATETIME_SECONDS, nanos=NANOS, tz=st.sampled_from(ZONES))
def test_format_matches_datetime(seconds: int, nanos: int, tz: datetime.tzinfo) -> None:
    assert format_go_time(seconds, nanos, tz) == datetime_text(seconds, nanos, tz)


@settings(max_examples=300, deadline=None)
@given(seconds=DATETIME_SECONDS, nanos=NANOS, tz=st.sampled_from(ZONES))
def test_parse_inverts_format_for_whole_minute_offsets(seconds: int, nanos: int, tz: datetime.tzinfo) -> None:
    offset = datetime.datetime.fromtimestamp(seconds, tz).utcoffset()
    assert offset is not None
    text = format_go_time(seconds, nanos, tz)
    if offset.total_seconds() % 60:
        # Historic local mean times have offsets in seconds; Go prints whole minutes, so the text is lossy.
        return
    assert parse_go_time(text) == (seconds, nanos)
    assert parse_go_time(text.encode()) == (seconds, nanos)


def test_nanoseconds_outside_one_second_are_normalised_like_time_unix() -> None:
    assert format_go_time(10, -1, UTC) == format_go_time(9, 999_999_999, UTC) == "1970-01-01T00:00:09.999999999Z"
    assert format_go_time(0, 2_500_000_000, UTC) == "1970-01-01T00:00:02.5Z"


def test_year_range_edges() -> None:
    year0 = -719_528 * 86_400  # 0000-01-01: 719528 days before the epoch in the proleptic Gregorian calendar
    assert format_go_time(year0, 0, UTC) == "0000-01-01T00:00:00Z"
    assert format_go_time(year0 - 1, 0, UTC) == ""
    assert parse_go_time("0000-01-01T00:00:00Z") == (year0, 0)
    last = int(datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp())
    assert format_go_time(last, 999_999_999, UTC) == "9999-12-31T23:59:59.999999999Z"
    assert format_go_time(last + 1, 0, UTC) == ""
    # the year is checked in the local zone: 9999-12-31T23:00Z is year 10000 at +02:00
    assert format_go_time(last - 3599, 0, datetime.timezone(datetime.timedelta(hours=2))) == ""
    assert format_go_time(2**62, 0, UTC) == format_go_time(-(2**62), 0, UTC) == ""


def test_sub_minute_offsets_truncate_toward_zero_like_go() -> None:
    def zone(seconds: int) -> datetime.tzinfo:
        return datetime.timezone(datetime.timedelta(seconds=seconds))

    assert format_go_time(0, 0, zone(-30)) == "1969-12-31T23:59:30+00:00"
    assert format_go_time(0, 0, zone(-90)) == "1969-12-31T23:58:30-00:01"
    assert format_go_time(0, 0, zone(561)) == "1970-01-01T00:09:21+00:09"


@pytest.fixture
def local_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_default_zone_is_local(local_zone: None) -> None:
    assert format_go_time(1_700_000_000, 0) == "2023-11-14T17:13:20-05:00"
    assert format_go_time(1_690_000_000, 0) == "2023-07-22T00:26:40-04:00"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "2023-02-29T00:00:00Z",
        "2023-13-01T00:00:00Z",
        "2023-01-01T24:00:00Z",
        "2023-01-01T00:60:00Z",
        "2023-01-01 00:00:00Z",
        "2023-01-01T00:00:00",
        "2023-01-01T00:00:00+0100",
        "2023-01-01T00:00:00.Z",
        "2023-01-01T00:00:00z",
        "2023-01-01T00:00:00+25:00",
        "2023-1-01T00:00:00Z",
        "2023-01-01T00:00:00Z ",
    ],
)
def test_parse_rejects(text: str) -> None:
    assert parse_go_time(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-02-29T12:00:00Z", datetime.datetime(2024, 2, 29, 12, tzinfo=UTC)),
        ("2023-06-01T05:30:00+05:30", datetime.datetime(2023, 6, 1, tzinfo=UTC)),
        ("2023-06-01T00:00:00-00:30", datetime.datetime(2023, 6, 1, 0, 30, tzinfo=UTC)),
        # Go's lenient fallback (time.Parse with the RFC 3339 layout)
        ("2023-06-01T5:00:00Z", datetime.datetime(2023, 6, 1, 5, tzinfo=UTC)),
        ("2023-06-01T00:00:00,25Z", datetime.datetime(2023, 6, 1, 0, 0, 0, 250000, tzinfo=UTC)),
        ("2023-06-01T00:00:00.1234567891Z", datetime.datetime(2023, 6, 1, 0, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_parse_accepts(text: str, expected: datetime.datetime) -> None:
    result = parse_go_time(text)
    assert result is not None
    seconds, nanos = result
    assert seconds == int(expected.timestamp())
    assert nanos // 1000 == expected.microsecond


# ---------------------------------------------------------------------------------------------------------
# Go itself

GO_TIME_ORACLE = r"""
// Reads lines "F <sec> <nsec>" (print time.Unix(sec, nsec).MarshalText() in the local zone, "ERR" on error)
// and "P <hex text>" (print Unix seconds and nanoseconds of UnmarshalText, or "ERR").
package main

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	in := bufio.NewScanner(os.Stdin)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		f := strings.Fields(in.Text())
		switch f[0] {
		case "F":
			sec, _ := strconv.ParseInt(f[1], 10, 64)
			nsec, _ := strconv.ParseInt(f[2], 10, 64)
			b, err := time.Unix(sec, nsec).MarshalText()
			if err != nil {
				fmt.Fprintln(out, "ERR")
			} else {
				fmt.Fprintln(out, string(b))
			}
		case "P":
			text := []byte{}
			if len(f) > 1 {
				text, _ = hex.DecodeString(f[1])
			}
			var t time.Time
			if err := t.UnmarshalText(text); err != nil {
				fmt.Fprintln(out, "ERR")
			} else {
				fmt.Fprintln(out, t.Unix(), t.Nanosecond())
			}
		}
	}
}
"""

GO = shutil.which("go") or ("/usr/local/go/bin/go" if os.path.exists("/usr/local/go/bin/go") else None)


@pytest.fixture(scope="module")
def go_time_oracle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if GO is None:
        pytest.skip("Go toolchain not installed")
    work = tmp_path_factory.mktemp("go-time-oracle")
    (work / "main.go").write_text(GO_TIME_ORACLE)
    subprocess.run(
        [GO, "build", "-o", str(work / "oracle"), "main.go"],
        cwd=work,
        check=True,
        env={**os.environ, "GO111MODULE": "off"},
    )
    return work / "oracle"


def go_lines(oracle: Path, lines: list[str], tz: str) -> list[str]:
    out = subprocess.run(
        [str(oracle)], input="\n".join(lines) + "\n", capture_output=True, text=True, check=True, env={"TZ": tz}
    )
    return out.stdout.splitlines()


def sample_instants(rng: random.Random) -> list[tuple[int, int]]:
    year0, year10000 = -62_167_219_200, 253_402_300_800
    picks = [
        (0, 0),
        (-1, 999_999_999),
        (year0, 0),
        (year0 - 1, 0),
        (year10000 - 1, 999_999_999),
        (year10000, 0),
        (year0 + 3600, 0),
        (year10000 - 3600, 0),
    ]
    for _ in range(400):
        kind = rng.random()
        if kind < 0.5:
            seconds = rng.randrange(-(2**34), 2**34)
        elif kind < 0.8:
            seconds = rng.randrange(year0 - 86_400 * 2, year10000 + 86_400 * 2)
        else:
            seconds = rng.choice([year0, year10000, 0]) + rng.randrange(-90_000, 90_000)
        picks.append((seconds, rng.choice([0, rng.randrange(10**9), 10**8, 1])))
    return picks


@pytest.mark.golang
@pytest.mark.parametrize(
    "zone",
    [
        "UTC",
        "America/New_York",
        "Asia/Kolkata",
        "Europe/Paris",
        "Australia/Lord_Howe",
        "America/St_Johns",
        "Pacific/Kiritimati",
    ],
)
def test_format_same_as_go(go_time_oracle: Path, zone: str, monkeypatch: pytest.MonkeyPatch) -> None:
    instants = sample_instants(random.Random(zone))
    want = go_lines(go_time_oracle, [f"F {s} {n}" for s, n in instants], zone)
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        local = [format_go_time(s, n) or "ERR" for s, n in instants]
    finally:
        monkeypatch.undo()
        time.tzset()
    named = [format_go_time(s, n, ZoneInfo(zone)) or "ERR" for s, n in instants]
    assert local == want
    # zoneinfo and Go agree wherever datetime can represent the instant; at the extremes we clamp
    inside = [i for i, (s, _) in enumerate(instants) if -62_135_596_800 + 86_400 <= s <= 253_402_300_799 - 86_400]
    assert [named[i] for i in inside] == [want[i] for i in inside]


@pytest.mark.golang
def test_parse_same_as_go(go_time_oracle: Path) -> None:
    rng = random.Random(5)
    texts = [
        "",
        "2023-06-01T05:30:00+05:30",
        "2023-06-01T5:00:00Z",
        "2023-06-01T00:00:00,25Z",
        "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999999-23:59",
        "2023-06-01T00:00:00+24:00",
        "2023-06-01T00:00:00+23:60",
        "2023-06-01T00:00:00+00:61",
        "-001-01-01T00:00:00Z",
        "+999-01-01T00:00:00Z",
        "2023-06-01T00:00:00.Z",
        "2023-02-29T00:00:00Z",
        "2024-02-29T00:00:00Z",
        "1900-02-29T00:00:00Z",
        "2000-02-29T00:00:00Z",
        "2023-06-01T24:00:00Z",
        "2023-06-01T00:00:60Z",
    ]
    for seconds, nanos in sample_instants(rng):
        text = format_go_time(seconds, nanos, datetime.timezone(datetime.timedelta(minutes=rng.randrange(-1439, 1440))))
        if text:
            texts.append(text)
            # damage one character to probe the rejection paths
            pos = rng.randrange(len(text))
            texts.append(text[:pos] + rng.choice("0912:-+.,TZ ") + text[pos + 1 :])
    want = go_lines(go_time_oracle, [f"P {t.encode().hex()}" for t in texts], "UTC")
    got = []
    for t in texts:
        parsed = parse_go_time(t)
        got.append("ERR" if parsed is None else f"{parsed[0]} {parsed[1]}")
    assert got == want


# from Go's time/time_test.go parseDurationTests
@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        ("0", 0), ("5s", 5 * 10**9), ("30s", 30 * 10**9), ("1478s", 1478 * 10**9), ("-5s", -5 * 10**9),
        ("+5s", 5 * 10**9), ("-0", 0), ("+0", 0), ("5.0s", 5 * 10**9), ("5.6s", 5_600_000_000),
        ("5.s", 5 * 10**9), (".5s", 500_000_000), ("1.0s", 10**9), ("1.00s", 10**9), ("1.004s", 1_004_000_000),
        ("100.00100s", 100_001_000_000), ("10ns", 10), ("11us", 11_000), ("12µs", 12_000), ("12μs", 12_000),
        ("13ms", 13_000_000), ("14s", 14 * 10**9), ("15m", 15 * 60 * 10**9), ("16h", 16 * 3600 * 10**9),
        ("3h30m", (3 * 3600 + 30 * 60) * 10**9), ("10.5s4m", 4 * 60 * 10**9 + 10_500_000_000),
        ("-2m3.4s", -(2 * 60 * 10**9 + 3_400_000_000)), ("39h9m14.425s", 140_954_425_000_000),
        ("52763797000ns", 52_763_797_000), ("0.3333333333333333333h", 20 * 60 * 10**9),
        ("9007199254740993ns", 9_007_199_254_740_993), ("9223372036854775807ns", (1 << 63) - 1),
        ("-9223372036854775808ns", -(1 << 63)),
    ],
)  # fmt: skip
def test_parse_go_duration(text: str, nanos: int) -> None:
    assert parse_go_duration(text) == nanos


@pytest.mark.parametrize(
    "text", ["", "3", "-", "s", ".", "-.", ".s", "+.s", "1d", "\x85\x85", "9223372036854775808ns", "3000000h"]
)
def test_parse_go_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="time: "):
        parse_go_duration(text)
