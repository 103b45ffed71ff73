"""Prometheus metrics: a small registry, the text exposition format (0.0.4), and the HTTP endpoint.

Written by hand (no ``prometheus_client``): three metric kinds and one text format are all the daemon
needs. Names follow upstream (``soci_fs_operation_duration_milliseconds``, ``soci_fs_operation_count``,
...); the pull mode chosen per layer is ``soci_snapshotter_layer_pull_mode`` (ours).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, TypeVar

from aiohttp import web

from soci.snapshotter import metrics as sm

log = logging.getLogger(__name__)

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
MILLISECOND_BUCKETS: Final = tuple(float(2**i) for i in range(15))  # 1, 2, 4, ... 16384 (upstream)

LabelValues = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Family:
    kind = ""

    def __init__(self, name: str, help_text: str, label_names: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.label_names = tuple(label_names)

    def _check(self, values: LabelValues) -> None:
        if len(values) != len(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {values}")

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:
        raise NotImplementedError


class Counter(_Family):
    kind = "counter"

    def __init__(self, name: str, help_text: str, label_names: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, label_names)
        self.values: dict[LabelValues, float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        self._check(labels)
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def samples(self) -> list[str]:
        return [f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in sorted(self.values.items())]


class Gauge(Counter):
    kind = "gauge"

    def set(self, *labels: str, value: float) -> None:
        self._check(labels)
        self.values[labels] = value


class Histogram(_Family):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, label_names: Sequence[str], buckets: Sequence[float]) -> None:
        super().__init__(name, help_text, label_names)
        self.buckets = tuple(sorted(buckets))
        self.series: dict[LabelValues, tuple[list[int], list[float]]] = {}

    def observe(self, *labels: str, value: float) -> None:
        self._check(labels)
        counts, total = self.series.setdefault(labels, ([0] * (len(self.buckets) + 1), [0.0]))
        index = next((i for i, bound in enumerate(self.buckets) if value <= bound), len(self.buckets))
        counts[index] += 1
        total[0] += value

    def samples(self) -> list[str]:
        lines = []
        for labels, (counts, total) in sorted(self.series.items()):
            cumulative = 0
            for bound, count in zip((*self.buckets, math.inf), counts, strict=True):
                cumulative += count
                le = f'le="{_number(bound)}"'
                lines.append(f"{self.name}_bucket{_labels(self.label_names, labels, le)} {cumulative}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, labels)} {_number(total[0])}")
            lines.append(f"{self.name}_count{_labels(self.label_names, labels)} {cumulative}")
        return lines


F = TypeVar("F", bound=_Family)


class Registry:
    def __init__(self) -> None:
        self.families: list[_Family] = []
        self.collectors: list[Callable[[], None]] = []
        """Called before each scrape, to copy statistics() of other components into gauges."""

    def add(self, family: F) -> F:
        self.families.append(family)
        return family

    def render(self) -> str:
        for collect in self.collectors:
            try:
                collect()
            except Exception:
                log.exception("metrics collector failed")
        lines: list[str] = []
        for family in self.families:
            lines += family.header() + family.samples()
        return "\n".join(lines) + "\n"


class SnapshotterMetrics:
    """``MetricsSink`` for the snapshotter and SOCI discovery, exported under upstream's names."""

    def __init__(self, registry: Registry) -> None:
        self.durations = registry.add(
            Histogram(
                "soci_fs_operation_duration_milliseconds",
                "Latency of soci snapshotter operations in milliseconds.",
                ("operation_type", "layer"),
                MILLISECOND_BUCKETS,
            )
        )
        self.operations = registry.add(
            Counter("soci_fs_operation_count", "Count of soci snapshotter operations.", ("operation_type", "layer"))
        )
        self.layer_modes = registry.add(
            Gauge(
                "soci_snapshotter_layer_pull_mode",
                "How each layer was prepared: remote (lazy), local (unpacked here) or defer (containerd).",
                ("layer", "mode"),
            )
        )
        self.modes = registry.add(
            Counter("soci_snapshotter_pull_mode_count", "Layer Prepares by the pull mode chosen.", ("mode",))
        )

    def observe(self, operation: str, layer: str, seconds: float) -> None:
        self.durations.observe(operation, layer, value=seconds * 1000.0)

    def count(self, operation: str, layer: str = "") -> None:
        self.operations.inc(operation, layer)

    def pull_mode(self, layer: str, mode: str) -> None:
        for other in (sm.MODE_REMOTE, sm.MODE_LOCAL, sm.MODE_DEFER):
            if other != mode:
                self.layer_modes.values.pop((layer, other), None)
        self.layer_modes.set(layer, mode, value=1.0)
        self.modes.inc(mode)


class MetricsServer:
    """``GET /metrics`` on a TCP ``host:port`` or a unix socket path (upstream ``metrics_network``)."""

    def __init__(self, registry: Registry, address: str, network: str = "tcp") -> None:
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
        return web.Response(body=self.registry.render().encode(), headers={"Content-Type": CONTENT_TYPE})

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
