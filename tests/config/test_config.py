"""Config loading: upstream's keys and defaults, zero-means-default rules, unknown keys warned and ignored."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import pytest

from soci.config import default_config, dump_toml, load_config, parse_config
from soci.config.config import IGNORED_KEYS, ignored_settings, parse_size
from soci.errors import InvalidArgument, NotFound


def test_defaults_match_upstream() -> None:
    config = default_config()
    assert (config.max_concurrency, config.mount_timeout_sec, config.metrics_network) == (100, 30, "tcp")
    assert (config.http.MaxRetries, config.http.RequestTimeoutMsec) == (8, 300_000)
    # [blob] retry settings inherit [http]
    assert (config.blob.max_retries, config.blob.min_wait_msec, config.blob.max_wait_msec) == (8, 30, 300_000)
    assert (config.background_fetch.max_queue_size, config.background_fetch.drop_policy) == (300, "newest")
    assert config.content_store.type == "soci"
    assert config.pull_modes.soci_v2.enable and not config.pull_modes.soci_v1.enable
    assert config.pull_modes.parallel_pull_unpack.chunk_size_bytes == -1
    assert config.snapshotter.min_layer_size == 0


def test_dump_is_valid_toml_that_loads_back_unchanged() -> None:
    text = dump_toml(default_config())
    document = tomllib.loads(text)
    assert list(document)[:3] == ["http_cache_type", "filesystem_cache_type", "resolve_result_entry"]
    assert document["http"]["DialTimeoutMsec"] == 3000
    assert "  [pull_modes.soci_v1]\n    enable = false\n" in text  # indented nested tables, as upstream prints
    assert parse_config(text) == default_config()


def test_zero_means_default_and_derived_values() -> None:
    config = parse_config(
        """
        mount_timeout_sec = 0
        max_concurrency = -1
        [http]
        MaxRetries = 3
        [blob]
        check_always = true
        [fuse]
        attr_timeout = 0
        [load_order]
        max_concurrency = 0
        """
    )
    assert config.mount_timeout_sec == 30
    assert config.max_concurrency == 0  # negative means unlimited
    assert config.blob.max_retries == 3  # inherited from [http]
    assert config.blob.valid_interval == 0  # check_always forces it
    assert config.fuse.attr_timeout == 3600  # not upstream's 1 s: layers never change while mounted
    assert config.load_order.max_concurrency == default_config().load_order.max_concurrency == 4


def test_an_upstream_style_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        """
        metrics_address = "127.0.0.1:9999"
        [pull_modes.soci_v1]
        enable = true
        [resolver.host."registry.example.com"]
        mirrors = [{host = "mirror.example.com:5000", insecure = true}]
        [snapshotter]
        min_layer_size = 10485760
        allow_invalid_mounts_on_restart = true
        """
    )
    config = load_config(path)
    assert config.metrics_address == "127.0.0.1:9999"
    assert config.pull_modes.soci_v1.enable
    (mirror,) = config.resolver.host["registry.example.com"].mirrors
    assert (mirror.host, mirror.insecure) == ("mirror.example.com:5000", True)
    assert config.snapshotter.min_layer_size == 10 << 20


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('max_concurrency = "10"', "max_concurrency must be an integer"),
        ("debug = 1", "debug must be a boolean"),
        ('[background_fetch]\ndrop_policy = "random"', "drop_policy"),
        ('metadata_store = "sqlite"', "metadata_store"),
        ('[pull_modes.parallel_pull_unpack]\nconcurrent_download_chunk_size = "12 parsecs"', "invalid size"),
        ("[blob", "invalid TOML"),
        ('[fuse]\nmetadata = "kernel"', "[fuse] metadata must be auto, erofs or fuse"),
    ],
)
def test_bad_files_are_clear_errors(text: str, named: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_config(text, "test.toml")
    assert named in str(caught.value) and "test.toml" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("no_such_key = 1", "'no_such_key' at the top level"),
        ("[blob]\nmax_retriess = 1", "'max_retriess' in [blob]"),
        ("[pull_modes.soci_v3]\nenable = true", "'soci_v3' in [pull_modes]"),
        ('[resolver.host."r"]\nmirrors = [{hots = "x"}]', "'hots' in [resolver.host.r.mirrors[0]]"),
        ('[content_store]\nnamespace = "k8s.io"', "'namespace' in [content_store]"),
    ],
)
def test_unknown_keys_are_warned_once_and_ignored(text: str, named: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="soci.config"):
        config = parse_config("mount_timeout_sec = 7\n" + text, "test.toml")
    assert config.mount_timeout_sec == 7  # the rest of the file still applies
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [f"test.toml: ignoring unknown key {named}"]


def test_upstream_docs_config_loads_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    path = Path(__file__).parent.parent / "data" / "upstream-config.toml"
    with caplog.at_level(logging.WARNING, logger="soci.config"):
        config = load_config(path)
    assert [r.getMessage() for r in caplog.records] == [f"{path}: ignoring unknown key 'namespace' in [content_store]"]
    assert config.pull_modes.parallel_pull_unpack.decompress_streams["gzip"].args == ["-d", "-c"]
    assert ignored_settings(config) == []  # the documented defaults: nothing to say


def test_ignored_settings_are_named_only_when_set() -> None:
    assert ignored_settings(default_config()) == []
    config = parse_config("resolve_result_entry = 5\n[directory_cache]\nsync_add = true\n")
    assert ignored_settings(config) == [
        f"resolve_result_entry = 5 ({IGNORED_KEYS['resolve_result_entry']})",
        f"directory_cache.sync_add = True ({IGNORED_KEYS['directory_cache.sync_add']})",
    ]


def test_the_credential_lifetime_is_ignored_only_without_the_cri_keychain() -> None:
    ttl = "[resolver]\nauth_client_ttl_sec = 60\n"
    assert ignored_settings(parse_config(ttl)) == [
        f"resolver.auth_client_ttl_sec = 60 ({IGNORED_KEYS['resolver.auth_client_ttl_sec']})"
    ]
    assert ignored_settings(parse_config(ttl + "[cri_keychain]\nenable_keychain = true\n")) == []


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        load_config(tmp_path / "absent.toml")
    assert load_config(tmp_path / "absent.toml", required=False) == default_config()


@pytest.mark.parametrize(
    ("text", "size"), [("", -1), ("0", -1), ("512", 512), ("1kb", 1024), ("1.5 MB", 3 << 19), ("2gb", 2 << 30)]
)
def test_chunk_size_grammar(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_directory_cache_size_limit() -> None:
    assert parse_config("[directory_cache]\nmax_size_bytes = 1048576\n").directory_cache.max_size_bytes == 1 << 20
    with pytest.raises(InvalidArgument, match=r"\[directory_cache\] max_size_bytes must be >= 0"):
        parse_config("[directory_cache]\nmax_size_bytes = -1\n", "test.toml")
