"""``soci``'s global flags: ``--timeout`` takes Go durations and reaches containerd calls; ``--debug`` logs."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import pytest

from soci.cli.main import GoDuration


def _soci(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from soci.cli.main import main; main()", *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(("text", "seconds"), [("10s", 10.0), ("1m30s", 90.0), ("250ms", 0.25), ("0", 0.0), ("5", 5.0)])
def test_timeout_values(text: str, seconds: float) -> None:
    assert GoDuration().convert(text, None, None) == seconds


@pytest.mark.parametrize(("text", "message"), [("10x", 'unknown unit "x"'), ("-1s", "negative"), ("s", "invalid")])
def test_bad_timeouts_are_usage_errors(text: str, message: str) -> None:
    with pytest.raises(click.BadParameter, match=message):
        GoDuration().convert(text, None, None)
    result = _soci("--timeout", text, "index", "list")
    assert result.returncode == 2 and message in result.stderr


def test_timeout_bounds_containerd_calls(tmp_path: Path) -> None:
    # a socket that accepts connections and never answers: without the timeout the command would wait forever
    with tempfile.TemporaryDirectory(prefix="soci-") as short, socket.socket(socket.AF_UNIX) as silent:
        path = Path(short) / "c.sock"
        silent.bind(str(path))
        silent.listen(8)
        result = _soci("--timeout", "500ms", "--address", str(path), "--root", str(tmp_path), "create", "x/y:z")
    assert result.returncode == 1, result.stderr
    assert "deadline" in result.stderr.lower() or "timed out" in result.stderr.lower(), result.stderr


def test_debug_turns_on_debug_logs(tmp_path: Path) -> None:
    quiet = _soci("--timeout", "1m", "--root", str(tmp_path), "index", "list")
    loud = _soci("--debug", "--timeout", "1m", "--root", str(tmp_path), "index", "list")
    assert quiet.returncode == 0 and loud.returncode == 0, loud.stderr
    assert "DEBUG" not in quiet.stderr
    assert "DEBUG soci.cli:" in loud.stderr and "timeout 60s" in loud.stderr
    assert loud.stdout == quiet.stdout  # logs never mix into the command's output
