"""Prometheus metrics on ``prometheus_client``: upstream's families, the process metrics, and the HTTP endpoint.

Names, labels and units are upstream's (namespace ``soci``, subsystem ``fs``): the
``soci_fs_operation_duration_milliseconds`` and ``..._microseconds`` histograms, the
``soci_fs_operation_count`` counter, the ``soci_fs_bytes_served`` gauge (labels ``operation_type``, ``layer``),
and ``soci_fs_layer_fetched_size_bytes`` / ``soci_fs_layer_size_bytes`` (labels ``digest``, ``mountpoint``),
read from the lazy filesystem at each scrape. The pull mode chosen per layer is ours
(``soci_snapshotter_layer_pull_mode``, ``soci_snapshotter_pull_mode_count``).

Upstream's counters come from Go's client, which does not append ``_total``; ``prometheus_client`` always
would, so those counters are ``GoCounter`` collectors and ``render`` writes them under their own name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Final

import prometheus_client
from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from soci.fs import metrics as fm
from soci.snapshotter import metrics as sm

log = logging.getLogger(__name__)

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
MILLISECOND_BUCKETS: Final = tuple(float(2**i) for i in range(15))  # 1, 2, 4, ... 16384 (upstream)
MICROSECOND_BUCKETS: Final = tuple(float(2**i) for i in range(11))  # 1, 2, 4, ... 1024 (upstream)
OPERATION_LABELS: Final = ("operation_type", "layer")

# upstream's Go client writes no *_created series; neither do we (this is process-wide in prometheus_client)
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

LayerSizes = Callable[[], Iterable[tuple[str, str, int, int]]]
"""``(digest, mountpoint, size, fetched size)`` per served layer (``FuseLayerMounter.layer_sizes``)."""


class GoCounter(Collector):
    """A counter exported under its exact name, as Go's client does (``prometheus_client`` would add _total)."""

    def __init__(self, name: str, documentation: str, label_names: Sequence[str], registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.label_names = tuple(label_names)
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        if len(labels) != len(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {labels}")
        if amount < 0:
            raise ValueError(f"{self.name}: a counter cannot decrease (amount {amount})")
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + amount

    def value(self, *labels: str) -> float:
        with self._lock:
            return self._values.get(labels, 0.0)

    def collect(self) -> Iterator[Metric]:
        metric = Metric(self.name, self.documentation, "counter")
        with self._lock:
            items = sorted(self._values.items())
        for labels, value in items:
            metric.add_sample(self.name, dict(zip(self.label_names, labels, strict=True)), value)
        yield metric

    def describe(self) -> Iterator[Metric]:
        yield Metric(self.name, self.documentation, "counter")


class _LayerSizeCollector(Collector):
    def __init__(self, sources: list[LayerSizes]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        fetched = GaugeMetricFamily(
            "soci_fs_layer_fetched_size_bytes", "Bytes of the layer fetched so far.", labels=("digest", "mountpoint")
        )
        size = GaugeMetricFamily("soci_fs_layer_size_bytes", "Size of the layer.", labels=("digest", "mountpoint"))
        for source in self._sources:
            try:
                layers = list(source())
            except Exception:
                log.exception("cannot read layer sizes for metrics")
                continue
            for digest, mountpoint, total, done in layers:
                fetched.add_metric((digest, mountpoint), float(done))
                size.add_metric((digest, mountpoint), float(total))
        yield fetched
        yield size

    def describe(self) -> Iterator[Metric]:
        return iter(())


class _Single(Collector):
    def __init__(self, metric: Metric) -> None:
        self._metric = metric

    def collect(self) -> Iterator[Metric]:
        yield self._metric


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition format 0.0.4 of ``registry``; ``GoCounter`` families keep their names."""
    parts: list[bytes] = []
    for metric in registry.collect():
        if metric.type == "counter" and not any(s.name.endswith("_total") for s in metric.samples):
            # written as untyped (no suffix munging), then typed back: the samples are exactly upstream's
            untyped = Metric(metric.name, metric.documentation, "unknown")
            untyped.samples = metric.samples
            text = prometheus_client.generate_latest(_Single(untyped))
            parts.append(text.replace(f"# TYPE {metric.name} untyped\n".encode(),
                                      f"# TYPE {metric.name} counter\n".encode(), 1))  # fmt: skip
        else:
            parts.append(prometheus_client.generate_latest(_Single(metric)))
    return b"".join(parts)


def new_registry() -> CollectorRegistry:
    """A registry with the process metrics (``process_*``, as Go's client exports) and the Python runtime's."""
    registry = CollectorRegistry(auto_describe=False)
    prometheus_client.ProcessCollector(registry=registry)
    prometheus_client.PlatformCollector(registry=registry)
    prometheus_client.GCCollector(registry=registry)
    return registry


class SnapshotterMetrics:
    """The daemon's ``MetricsSink`` (snapshotter) and ``FsMetrics`` (lazy filesystem), under upstream's names."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.durations = Histogram(
            "soci_fs_operation_duration_milliseconds",
            "Latency of soci snapshotter operations in milliseconds.",
            OPERATION_LABELS,
            buckets=MILLISECOND_BUCKETS,
            registry=registry,
        )
        self.durations_us = Histogram(
            "soci_fs_operation_duration_microseconds",
            "Latency of soci snapshotter operations in microseconds.",
            OPERATION_LABELS,
            buckets=MICROSECOND_BUCKETS,
            registry=registry,
        )
        self.operations = GoCounter(
            "soci_fs_operation_count", "Count of soci snapshotter operations.", OPERATION_LABELS, registry
        )
        self.bytes_served = Gauge(
            "soci_fs_bytes_served", "Bytes served by soci snapshotter operations.", OPERATION_LABELS, registry=registry
        )
        self._layer_sizes: list[LayerSizes] = []
        registry.register(_LayerSizeCollector(self._layer_sizes))
        self.layer_modes = Gauge(
            "soci_snapshotter_layer_pull_mode",
            "How each layer was prepared: remote (lazy), local (unpacked here) or defer (containerd).",
            ("layer", "mode"),
            registry=registry,
        )
        self.modes = GoCounter(
            "soci_snapshotter_pull_mode_count", "Layer Prepares by the pull mode chosen.", ("mode",), registry
        )

    def add_layer_sizes(self, source: LayerSizes) -> None:
        self._layer_sizes.append(source)

    def observe(self, operation: str, layer: str, seconds: float) -> None:
        if operation in fm.MICROSECOND_OPERATIONS:
            self.durations_us.labels(operation, layer).observe(seconds * 1e6)
        else:
            self.durations.labels(operation, layer).observe(seconds * 1000.0)

    def count(self, operation: str, layer: str = "") -> None:
        self.operations.inc(operation, layer)

    def add_bytes(self, operation: str, layer: str, amount: int) -> None:
        self.bytes_served.labels(operation, layer).inc(amount)

    def pull_mode(self, layer: str, mode: str) -> None:
        for other in (sm.MODE_REMOTE, sm.MODE_LOCAL, sm.MODE_DEFER):
            if other != mode:
                with contextlib.suppress(KeyError):  # never set
                    self.layer_modes.remove(layer, other)
        self.layer_modes.labels(layer, mode).set(1.0)
        self.modes.inc(mode)


class MetricsServer:
    """``GET /metrics`` on a TCP ``host:port`` or a unix socket path (upstream ``metrics_network``)."""

    def __init__(self, registry: CollectorRegistry, address: str, network: str = "tcp") -> None:
        self.registry = registry
        self.address = address
        self.network = network
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site: web.BaseSite
        if self.network == "unix":
            path = Path(self.address)
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_socket():
                path.unlink()
            site = web.UnixSite(self._runner, str(path))
        else:
            host, _, port = self.address.rpartition(":")
            site = web.TCPSite(self._runner, host or "0.0.0.0", int(port))
        await site.start()
        if self.network == "unix":
            os.chmod(self.address, 0o660)
        log.info("serving metrics", extra={"address": self.address, "network": self.network})

    async def _handle(self, request: web.Request) -> web.Response:
        return web.Response(body=render(self.registry), headers={"Content-Type": CONTENT_TYPE})

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
