"""The Prometheus exposition: upstream's names, labels and units on prometheus_client."""

from __future__ import annotations

import asyncio
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from soci.daemon.metrics import GoCounter, MetricsServer, SnapshotterMetrics, new_registry, render
from soci.fs import metrics as fm
from soci.testing.registry_server import free_port


def _families(text: str) -> dict[str, str]:
    """Family name -> type, as a Prometheus server parses the text."""
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def test_counters_keep_upstream_names_without_total_suffix() -> None:
    registry = new_registry()
    metrics = SnapshotterMetrics(registry)
    metrics.count("fuse_mount_failure_count", "sha256:l1")
    metrics.count("fuse_mount_failure_count", "sha256:l1")
    text = render(registry).decode()
    assert "# TYPE soci_fs_operation_count counter\n" in text
    assert 'soci_fs_operation_count{layer="sha256:l1",operation_type="fuse_mount_failure_count"} 2.0' in text
    assert "soci_fs_operation_count_total" not in text
    assert "_created" not in text


def test_durations_go_to_the_histogram_of_their_unit() -> None:
    registry = new_registry()
    metrics = SnapshotterMetrics(registry)
    metrics.observe("mount", "sha256:l1", 0.003)  # 3 ms
    metrics.observe(fm.OP_SYNCHRONOUS_READ, "sha256:l1", 0.000_5)  # 500 µs
    text = render(registry).decode()
    ms = "soci_fs_operation_duration_milliseconds_bucket"
    assert f'{ms}{{layer="sha256:l1",le="2.0",operation_type="mount"}} 0.0' in text
    assert f'{ms}{{layer="sha256:l1",le="4.0",operation_type="mount"}} 1.0' in text
    assert f'{ms}{{layer="sha256:l1",le="16384.0",operation_type="mount"}} 1.0' in text
    us = "soci_fs_operation_duration_microseconds_bucket"
    assert f'{us}{{layer="sha256:l1",le="256.0",operation_type="synchronous_read"}} 0.0' in text
    assert f'{us}{{layer="sha256:l1",le="512.0",operation_type="synchronous_read"}} 1.0' in text
    assert 'operation_type="synchronous_read"' not in text.split("soci_fs_operation_duration_milliseconds")[1]


def test_bytes_served_layer_sizes_and_process_metrics() -> None:
    registry = new_registry()
    metrics = SnapshotterMetrics(registry)
    metrics.add_bytes(fm.OP_SYNCHRONOUS_BYTES_SERVED, "sha256:l1", 4096)
    metrics.add_bytes(fm.OP_SYNCHRONOUS_BYTES_SERVED, "sha256:l1", 100)
    metrics.add_layer_sizes(lambda: [("sha256:l1", "/snap/1/fs", 1000, 250)])
    text = render(registry).decode()
    assert 'soci_fs_bytes_served{layer="sha256:l1",operation_type="synchronous_bytes_served"} 4196.0' in text
    assert 'soci_fs_layer_fetched_size_bytes{digest="sha256:l1",mountpoint="/snap/1/fs"} 250.0' in text
    assert 'soci_fs_layer_size_bytes{digest="sha256:l1",mountpoint="/snap/1/fs"} 1000.0' in text
    families = _families(text)
    assert families["soci_fs_operation_count"] == "counter"
    assert families["soci_fs_operation_duration_milliseconds"] == "histogram"
    assert families["soci_fs_bytes_served"] == "gauge"
    assert families["process_resident_memory_bytes"] == "gauge"
    assert families["process_cpu_seconds"] == "counter"  # process_cpu_seconds_total, as Go's client


def test_a_failing_layer_size_source_does_not_break_the_scrape() -> None:
    registry = new_registry()
    metrics = SnapshotterMetrics(registry)

    def broken() -> list[tuple[str, str, int, int]]:
        raise RuntimeError("gone")

    metrics.add_layer_sizes(broken)
    metrics.count("mount")
    assert "soci_fs_operation_count" in render(registry).decode()


def test_pull_mode_per_layer_keeps_only_the_latest_mode() -> None:
    registry = new_registry()
    metrics = SnapshotterMetrics(registry)
    metrics.pull_mode("sha256:l1", "remote")
    metrics.pull_mode("sha256:l1", "local")
    text = render(registry).decode()
    assert 'soci_snapshotter_layer_pull_mode{layer="sha256:l1",mode="local"} 1.0' in text
    assert 'soci_snapshotter_layer_pull_mode{layer="sha256:l1",mode="remote"}' not in text
    assert 'soci_snapshotter_pull_mode_count{mode="remote"} 1.0' in text
    assert 'soci_snapshotter_pull_mode_count{mode="local"} 1.0' in text


def test_go_counter_refuses_wrong_labels_and_decrements() -> None:
    counter = GoCounter("c", "a counter", ("op",), new_registry())
    counter.inc("x", amount=2)
    assert counter.value("x") == 2
    for bad in (lambda: counter.inc(), lambda: counter.inc("x", amount=-1)):
        try:
            bad()
        except ValueError:
            continue
        raise AssertionError("accepted")


def test_metrics_endpoint_over_tcp() -> None:
    registry = new_registry()
    SnapshotterMetrics(registry).count("mount", "l")
    port = free_port()

    async def scrape() -> tuple[str, str]:
        server = MetricsServer(registry, f"127.0.0.1:{port}")
        await server.start()
        try:
            return await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
        finally:
            await server.aclose()

    text, content_type = asyncio.run(scrape())
    assert content_type.startswith("text/plain; version=0.0.4")
    assert 'soci_fs_operation_count{layer="l",operation_type="mount"} 1.0' in text


def _get(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode()), str(response.headers["Content-Type"])
