"""The ``soci-snapshotter-grpc`` command line: config subcommands, flags, startup errors."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from soci.config import default_config, dump_toml, parse_config
from soci.daemon.mounters import fs_options
from soci.daemon.server import unsupported_settings


def _daemon(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "soci.daemon", *args], capture_output=True, text=True, timeout=60, env=env
    )


def test_config_default_prints_the_defaults() -> None:
    result = _daemon("config", "default")
    assert result.returncode == 0, result.stderr
    assert result.stdout == dump_toml(default_config())


def test_config_dump_shows_the_file_over_the_defaults(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("mount_timeout_sec = 7\n[snapshotter]\nmin_layer_size = 1000\n")
    result = _daemon("--config", str(config), "config", "dump")
    assert result.returncode == 0, result.stderr
    document = tomllib.loads(result.stdout)
    assert document["mount_timeout_sec"] == 7
    assert document["snapshotter"]["min_layer_size"] == 1000
    assert document["max_concurrency"] == 100


def test_config_from_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "env.toml"
    config.write_text("mount_timeout_sec = 9\n")
    result = _daemon("config", "dump", env={**os.environ, "SOCI_SNAPSHOTTER_CONFIG": str(config)})
    assert tomllib.loads(result.stdout)["mount_timeout_sec"] == 9


def test_unknown_key_is_a_warning_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "typo.toml"
    config.write_text("[fuse]\nattr_timout = 2\n")
    result = _daemon("--config", str(config), "config", "dump")
    assert result.returncode == 0, result.stderr
    assert "ignoring unknown key 'attr_timout' in [fuse]" in result.stderr
    assert tomllib.loads(result.stdout)["fuse"]["attr_timeout"] == 3600


def test_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    result = _daemon("--config", str(tmp_path / "nope.toml"), "config", "dump")
    assert result.returncode == 1 and "does not exist" in result.stderr


def test_bad_log_level_is_a_usage_error(tmp_path: Path) -> None:
    result = _daemon("--log-level", "chatty", "--root", str(tmp_path / "root"), "--address", str(tmp_path / "s"))
    assert result.returncode == 2 and "chatty" in result.stderr


def test_settings_the_daemon_does_not_act_on_are_named() -> None:
    assert unsupported_settings(parse_config("")) == []
    config = parse_config(
        'debug_address = "127.0.0.1:6060"\n[cri_keychain]\nenable_keychain = true\n'
        "[kubeconfig_keychain]\nenable_keychain = true"
    )
    named = unsupported_settings(config)
    # the CRI keychain is served; the kubeconfig keychain is accepted and named
    assert len(named) == 2 and "kubeconfig_keychain" in named[0] and "debug_address" in named[1]


def test_layer_metadata_is_cached_for_an_hour_unless_configured() -> None:
    # layers never change while mounted, so the daemon serves them as `soci mount` does (not upstream's 1 s)
    fuse = fs_options(default_config()).fuse
    assert (fuse.attr_timeout, fuse.entry_timeout, fuse.negative_timeout) == (3600, 3600, 3600)
    fuse = fs_options(parse_config("[fuse]\nattr_timeout = 2\nentry_timeout = 0\n")).fuse
    assert (fuse.attr_timeout, fuse.entry_timeout) == (2, 3600)
