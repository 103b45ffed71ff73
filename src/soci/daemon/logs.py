"""JSON log lines in logrus's shape (sorted keys, ``level``, ``msg``, ``time`` with fixed-width
nanoseconds), carrying any ``extra=`` fields, so upstream's log queries work unchanged."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Final, TextIO

TRACE: Final = 5
logging.addLevelName(TRACE, "TRACE")

LEVELS: Final = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "panic": logging.CRITICAL,
}
_LEVEL_NAMES: Final = {
    TRACE: "trace",
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "fatal",
}
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def rfc3339_nano_fixed(seconds: float) -> str:
    whole = int(seconds)
    nanos = round((seconds - whole) * 1e9)
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    local = time.localtime(whole)
    offset = local.tm_gmtoff or 0
    zone = (
        "Z" if offset == 0 else f"{'+' if offset > 0 else '-'}{abs(offset) // 3600:02d}:{abs(offset) % 3600 // 60:02d}"
    )
    return time.strftime("%Y-%m-%dT%H:%M:%S", local) + f".{nanos:09d}" + zone


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            key: value for key, value in vars(record).items() if key not in _STANDARD and not key.startswith("_")
        }
        entry["level"] = _LEVEL_NAMES.get(record.levelno, record.levelname.lower())
        entry["msg"] = record.getMessage()
        entry["time"] = rfc3339_nano_fixed(record.created)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, sort_keys=True, default=str)


def parse_level(name: str) -> int:
    try:
        return LEVELS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {name!r}; use one of {', '.join(LEVELS)}") from None


def setup(level: int, stream: TextIO = sys.stderr) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # third-party chatter only at debug, as upstream redirects go-fuse's log to debug
    for noisy in ("aiohttp", "asyncio", "grpc"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
