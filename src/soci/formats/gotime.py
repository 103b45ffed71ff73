"""Go ``time.Time`` text form, as upstream stores ``mod_time`` in a zTOC.

Upstream formats tar modification times with Go's ``Time.MarshalText`` and reads them back with
``Time.UnmarshalText``. Both are reproduced here on plain integers so that years 0 and 9999, negative
times and odd zone offsets behave exactly as in Go, without going through ``datetime``'s narrower range.
"""

from __future__ import annotations

import datetime
import re
import time

_NANOS_PER_SEC = 1_000_000_000
_SECS_PER_DAY = 86_400

# datetime can represent these instants in any zone with an offset below one day.
_DATETIME_MIN_SEC = -62_135_596_800 + _SECS_PER_DAY  # 0001-01-02T00:00:00Z
_DATETIME_MAX_SEC = 253_402_300_799 - _SECS_PER_DAY  # 9999-12-30T23:59:59Z

# Beyond these, the local year cannot be within 0..9999 whatever the zone offset.
_YEAR0_START_SEC = -62_167_219_200  # 0000-01-01T00:00:00Z
_YEAR10000_START_SEC = 253_402_300_800  # 10000-01-01T00:00:00Z


def format_go_time(seconds: int, nanoseconds: int, tz: datetime.tzinfo | None = None) -> str:
    """Go's ``time.Unix(seconds, nanoseconds).In(tz).MarshalText()``; "" where Go reports an error.

    ``tz=None`` means the local time zone, which is what Go's tar reader uses (``time.Unix``).
    """
    extra, nanoseconds = divmod(nanoseconds, _NANOS_PER_SEC)
    seconds += extra
    if not _YEAR0_START_SEC - _SECS_PER_DAY <= seconds < _YEAR10000_START_SEC + _SECS_PER_DAY:
        return ""
    offset = _utc_offset(seconds, tz)
    days, second_of_day = divmod(seconds + offset, _SECS_PER_DAY)
    year, month, day = _civil_from_days(days)
    if not 0 <= year <= 9999:
        return ""
    hour, rest = divmod(second_of_day, 3600)
    minute, second = divmod(rest, 60)
    text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    if nanoseconds:
        text += "." + f"{nanoseconds:09d}".rstrip("0")
    if offset == 0:
        return text + "Z"
    # Go truncates the offset to whole minutes toward zero, so -30 s prints as "+00:00".
    zone_minutes = abs(offset) // 60
    sign = "-" if offset < 0 and zone_minutes else "+"
    zone_hours, zone_rest = divmod(zone_minutes, 60)
    if zone_hours >= 24:
        return ""
    return f"{text}{sign}{zone_hours:02d}:{zone_rest:02d}"


_RFC3339_RE = re.compile(
    rb"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{1,2}):([0-9]{2}):([0-9]{2})"
    rb"(?:[.,]([0-9]+))?(?:(Z)|([+-])([0-9]{2}):([0-9]{2}))"
)


def parse_go_time(text: str | bytes) -> tuple[int, int] | None:
    """(seconds, nanoseconds) since the Unix epoch from Go's ``Time.UnmarshalText`` input; None if Go fails.

    Accepts what Go accepts: its strict RFC 3339 path plus the lenient ``time.Parse(RFC3339)`` fallback
    (one-digit hour, comma before the fraction, zone hour 24 and zone minute 60).
    """
    raw = text.encode() if isinstance(text, str) else bytes(text)
    m = _RFC3339_RE.fullmatch(raw)
    if m is None:
        return None
    year, month, day = int(m[1]), int(m[2]), int(m[3])
    hour, minute, second = int(m[4]), int(m[5]), int(m[6])
    if not (1 <= month <= 12 and 1 <= day <= _days_in_month(year, month)):
        return None
    if hour >= 24 or minute >= 60 or second >= 60:
        return None
    nanoseconds = int(m[7][:9].ljust(9, b"0")) if m[7] else 0
    offset = 0
    if not m[8]:
        zone_hours, zone_minutes = int(m[10]), int(m[11])
        if zone_hours > 24 or zone_minutes > 60:
            return None
        offset = (zone_hours * 60 + zone_minutes) * 60
        if m[9] == b"-":
            offset = -offset
    seconds = _days_from_civil(year, month, day) * _SECS_PER_DAY + hour * 3600 + minute * 60 + second - offset
    return seconds, nanoseconds


def _utc_offset(seconds: int, tz: datetime.tzinfo | None) -> int:
    if tz is None:
        try:
            return time.localtime(seconds).tm_gmtoff
        except (OverflowError, OSError, ValueError):
            return 0
    # datetime cannot hold year 0; the offset of the nearest representable instant is the best answer.
    clamped = min(max(seconds, _DATETIME_MIN_SEC), _DATETIME_MAX_SEC)
    delta = datetime.datetime.fromtimestamp(clamped, tz).utcoffset()
    return 0 if delta is None else int(delta.total_seconds())


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if _is_leap(year) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (any year, including 0 and negatives)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """Inverse of _days_from_civil."""
    days += 719_468
    era = days // 146_097
    day_of_era = days - era * 146_097
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36_524 - day_of_era // 146_096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    month_index = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * month_index + 2) // 5 + 1
    month = month_index + (3 if month_index < 10 else -9)
    year = year_of_era + era * 400 + (month <= 2)
    return year, month, day


_DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek mu
    "ms": 1_000_000,
    "s": _NANOS_PER_SEC,
    "m": 60 * _NANOS_PER_SEC,
    "h": 3_600 * _NANOS_PER_SEC,
}
_DURATION_PART = re.compile(r"(\d*)(?:\.(\d*))?([^\d.]*)")
_MAX_DURATION_NS = (1 << 63) - 1


def parse_go_duration(text: str) -> int:
    """Nanoseconds of a Go ``time.ParseDuration`` string (``300ms``, ``-1.5h``, ``2h45m``); ValueError as Go's.

    Like Go: a sign, then one or more ``<decimal><unit>`` parts; a bare ``0`` is allowed, any other number
    needs a unit; the total must fit an int64 of nanoseconds.
    """
    error = ValueError(f"time: invalid duration {_go_quote(text)}")
    rest, negative = text, False
    if rest[:1] in ("+", "-"):
        negative, rest = rest[0] == "-", rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise error
    total = 0
    pos = 0
    while pos < len(rest):
        match = _DURATION_PART.match(rest, pos)
        assert match is not None  # every group may be empty
        whole, fraction, unit = match.group(1), match.group(2), match.group(3)
        if not whole and not fraction:
            raise error  # no digits before the unit
        if not unit:
            raise ValueError(f"time: missing unit in duration {_go_quote(text)}")
        scale = _DURATION_UNITS.get(unit)
        if scale is None:
            raise ValueError(f"time: unknown unit {_go_quote(unit)} in duration {_go_quote(text)}")
        value = int(whole or "0") * scale
        if fraction:
            digits, divisor = _leading_fraction(fraction)
            value += int(float(digits) * (scale / divisor))  # Go's float64 step, so results match to the ns
        total += value
        if total > _MAX_DURATION_NS + negative:
            raise error
        pos = match.end()
    return -total if negative else total


def _leading_fraction(digits: str) -> tuple[int, float]:
    """Go's ``leadingFraction``: the digits that fit an int64 and their power of ten (the rest are dropped)."""
    value, scale = 0, 1.0
    for c in digits:
        if value > ((1 << 63) - 1) // 10:
            break
        value = value * 10 + int(c)
        if value > 1 << 63:
            value //= 10
            break
        scale *= 10
    return value, scale


def _go_quote(text: str) -> str:
    """Go's ``strconv.Quote`` for the printable text error messages quote."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
