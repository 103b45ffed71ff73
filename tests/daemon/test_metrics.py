"""Prometheus text exposition written by hand."""

from __future__ import annotations

import asyncio
import urllib.request

from soci.daemon.metrics import Counter, Gauge, Histogram, MetricsServer, Registry, SnapshotterMetrics
from soci.testing.registry_server import free_port


def test_histogram_buckets_are_cumulative_with_sum_and_count() -> None:
    registry = Registry()
    histogram = registry.add(Histogram("x_ms", "help text", ("op",), (1.0, 10.0)))
    for value in (0.5, 5.0, 50.0):
        histogram.observe("mount", value=value)
    lines = registry.render().splitlines()
    assert lines[:2] == ["# HELP x_ms help text", "# TYPE x_ms histogram"]
    assert 'x_ms_bucket{op="mount",le="1"} 1' in lines
    assert 'x_ms_bucket{op="mount",le="10"} 2' in lines
    assert 'x_ms_bucket{op="mount",le="+Inf"} 3' in lines
    assert 'x_ms_sum{op="mount"} 55.5' in lines and 'x_ms_count{op="mount"} 3' in lines


def test_label_values_are_escaped_and_collectors_run_before_rendering() -> None:
    registry = Registry()
    gauge = registry.add(Gauge("g", "a gauge", ("path",)))
    counter = registry.add(Counter("c", "a counter"))
    registry.collectors.append(lambda: gauge.set('a"b\\c\nd', value=2))
    counter.inc()
    counter.inc(amount=2)
    text = registry.render()
    assert 'g{path="a\\"b\\\\c\\nd"} 2' in text
    assert "\nc 3\n" in text


def test_pull_mode_per_layer_keeps_only_the_latest_mode() -> None:
    registry = Registry()
    metrics = SnapshotterMetrics(registry)
    metrics.pull_mode("sha256:l1", "remote")
    metrics.pull_mode("sha256:l1", "local")
    metrics.count("fuse_mount_failure_count", "sha256:l1")
    metrics.observe("mount", "sha256:l1", 0.003)
    text = registry.render()
    assert 'soci_snapshotter_layer_pull_mode{layer="sha256:l1",mode="local"} 1' in text
    assert 'mode="remote"} 1' not in text.split("soci_snapshotter_pull_mode_count")[0]
    assert 'soci_snapshotter_pull_mode_count{mode="remote"} 1' in text
    assert 'soci_fs_operation_count{operation_type="fuse_mount_failure_count",layer="sha256:l1"} 1' in text
    assert 'soci_fs_operation_duration_milliseconds_bucket{operation_type="mount",layer="sha256:l1",le="4"} 1' in text


def test_metrics_endpoint_over_tcp() -> None:
    registry = Registry()
    registry.add(Counter("soci_test_total", "t")).inc()
    port = free_port()

    async def scrape() -> str:
        server = MetricsServer(registry, f"127.0.0.1:{port}")
        await server.start()
        try:
            return await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
        finally:
            await server.aclose()

    assert "soci_test_total 1" in asyncio.run(scrape())


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())
