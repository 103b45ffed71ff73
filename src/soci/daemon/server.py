"""Wiring and lifetime of the ``soci-snapshotter-grpc`` process.

Start: check overlayfs, open the metadata store, put mounts back as the database says (``restore``),
listen on the unix socket (mode 0660) or on the systemd-activated one, serve metrics, tell systemd
READY=1. Stop: SIGINT unmounts every remote layer and cleans up; SIGTERM leaves the mounts for the next
start (which checks and re-mounts them).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import shutil
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import grpc
from prometheus_client import CollectorRegistry

from soci import __version__, system
from soci.config.config import Config, ignored_settings
from soci.cri.keychain import CriKeychain
from soci.cri.proxy import ImageServiceProxy
from soci.daemon import mounters, systemd
from soci.daemon.metrics import MetricsServer, SnapshotterMetrics, new_registry
from soci.errors import FailedPrecondition, InvalidArgument
from soci.fs.mount import clean_dead_mounts
from soci.registry import TransportOptions
from soci.snapshotter.local import LocalUnpacker
from soci.snapshotter.metastore import SqliteMetaStore
from soci.snapshotter.metrics import MetricsSink, NullMetrics
from soci.snapshotter.remote import LayerMounter, SociRemoteFS
from soci.snapshotter.resolver import Mirror, RegistryResolver
from soci.snapshotter.service import SnapshotsService, snapshots_handler
from soci.snapshotter.snapshotter import Snapshotter, SnapshotterOptions

log = logging.getLogger(__name__)

DEFAULT_ADDRESS: Final = "/run/soci-snapshotter-grpc/soci-snapshotter-grpc.sock"
LAYER_MOUNTER_ENV: Final = "SOCI_SNAPSHOTTER_LAYER_MOUNTER"
"""``module:callable`` returning the LayerMounter to use (called with the config and the root)."""
SOCKET_MODE: Final = 0o660
STOP_GRACE_SEC: Final = 2.0

LayerMounterFactory = Callable[[Config, Path], LayerMounter]


@dataclass(frozen=True, slots=True)
class DaemonOptions:
    address: str
    root: Path
    config: Config
    hosts_dir: Path | None = None


def default_layer_mounter(config: Config, root: Path) -> LayerMounter:
    """The lazy filesystem behind remote snapshots when ``SOCI_SNAPSHOTTER_LAYER_MOUNTER`` is not set.

    ``mounters.fuse`` serves indexed layers lazily; ``mounters.unavailable`` (for machines without FUSE) makes
    every indexed layer fall back to a local unpack by the snapshotter."""
    return mounters.fuse(config, root)


def load_layer_mounter(config: Config, root: Path) -> LayerMounter:
    spec = os.environ.get(LAYER_MOUNTER_ENV, "")
    if not spec:
        return default_layer_mounter(config, root)
    module_name, _, attribute = spec.partition(":")
    try:
        factory: LayerMounterFactory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise InvalidArgument(f"{LAYER_MOUNTER_ENV}={spec!r}: cannot load it ({exc})") from exc
    log.info("using layer mounter %s", spec)
    return factory(config, root)


def unsupported_settings(config: Config) -> list[str]:
    """Settings this daemon accepts (so upstream files load) but does not act on."""
    found = []
    if config.pull_modes.parallel_pull_unpack.enable:
        found.append("[pull_modes.parallel_pull_unpack] enable (layers are unpacked one by one instead)")
    if config.kubeconfig_keychain.enable_keychain:
        found.append(
            "[kubeconfig_keychain] enable_keychain (no Kubernetes API client; use [cri_keychain] or the Docker config)"
        )
    if config.debug_address:
        found.append("debug_address (no debug endpoint)")
    if config.content_store.type == "containerd":
        found.append("[content_store] type = 'containerd' (SOCI artifacts are kept in memory)")
    return found


def socket_path(address: str) -> Path:
    """The unix socket path of ``--address`` (a plain path or ``unix://path``)."""
    path = address.removeprefix("unix://")
    if not path or "://" in path:
        raise InvalidArgument(f"unsupported address {address!r}: want a unix socket path, unix://path or fd://")
    return Path(path)


def _check_not_served(path: Path) -> None:
    """A live server on ``path`` means another daemon; a dead socket file is removed."""
    if not os.path.lexists(path):
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()
            return
    raise FailedPrecondition(f"another process is already serving on {path}")


class _FdProxy:
    """Hands connections accepted on a systemd-activated socket to the gRPC server's private socket.

    grpcio cannot adopt a listening file descriptor, so bytes are relayed; connections made before
    the daemon was ready wait in the activated socket's backlog, as socket activation intends.
    """

    def __init__(self, fd: int, target: Path) -> None:
        self._listener = socket.socket(fileno=fd)
        self._target = target
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._listener.setblocking(False)
        self._server = await asyncio.start_unix_server(self._relay, sock=self._listener)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            target_reader, target_writer = await asyncio.open_unix_connection(str(self._target))
        except OSError:
            writer.close()
            return

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while chunk := await source.read(1 << 16):
                    sink.write(chunk)
                    await sink.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                with contextlib.suppress(OSError):
                    sink.close()

        await asyncio.gather(pump(reader, target_writer), pump(target_reader, writer))

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class Daemon:
    def __init__(self, options: DaemonOptions) -> None:
        self.options = options
        self.config = options.config
        self.root = options.root
        self.stop_signal: signal.Signals | None = None
        self._stopping = asyncio.Event()
        self._closers: list[Callable[[], Any]] = []

    def request_stop(self, signum: signal.Signals) -> None:
        if self.stop_signal is None:
            log.info("got %s", signum.name)
            self.stop_signal = signum
        self._stopping.set()

    async def run(self) -> None:
        config = self.config
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        log.info("starting soci-snapshotter-grpc", extra={"version": __version__, "root": str(self.root)})
        # before anything else looks under the root: a crashed run's dead FUSE mounts fail every path
        # operation on them (ENOTCONN)
        await asyncio.to_thread(clean_dead_mounts, self.root)
        snapshotter_root = self.root / "snapshotter"
        for setting in unsupported_settings(config):
            log.warning("ignoring unsupported setting %s", setting)
        for setting in ignored_settings(config):
            log.warning("ignoring setting %s", setting)
        if config.skip_check_snapshotter_supported:
            log.warning("skipped snapshotter is supported check")
        else:
            system.check_overlay_supported(snapshotter_root)

        metrics: MetricsSink = NullMetrics()
        exported: SnapshotterMetrics | None = None
        registry: CollectorRegistry | None = None
        if config.metrics_address and not config.no_prometheus:
            registry = new_registry()
            metrics = exported = SnapshotterMetrics(registry)

        keychain: CriKeychain | None = None
        image_proxy: ImageServiceProxy | None = None
        if config.cri_keychain.enable_keychain:
            ttl = config.resolver.auth_client_ttl_sec
            keychain = CriKeychain(float(ttl) if ttl >= 0 else None)
            image_proxy = ImageServiceProxy(config.cri_keychain.image_service_path, keychain)
            self._closers.append(image_proxy.aclose)
        resolver = RegistryResolver(
            hosts_dir=self.options.hosts_dir,
            keychain=keychain,
            mirrors={
                domain: [Mirror(m.host, m.insecure) for m in host.mirrors]
                for domain, host in config.resolver.host.items()
            },
            transport_options=TransportOptions(
                dial_timeout_msec=config.http.DialTimeoutMsec,
                response_header_timeout_msec=config.http.ResponseHeaderTimeoutMsec,
                request_timeout_msec=config.http.RequestTimeoutMsec,
                max_retries=config.http.MaxRetries,
                min_wait_msec=config.http.MinWaitMsec,
                max_wait_msec=config.http.MaxWaitMsec,
            ),
        )
        self._closers.append(resolver.aclose)
        mounter = load_layer_mounter(config, self.root)
        load_order = getattr(mounter, "load_order", None)
        if load_order is not None:
            load_order.set_metrics(metrics)
        if exported is not None:
            set_fs_metrics = getattr(mounter, "set_metrics", None)  # the lazy filesystem's own metrics
            if set_fs_metrics is not None:
                set_fs_metrics(exported)
            layer_sizes = getattr(mounter, "layer_sizes", None)
            if layer_sizes is not None:
                exported.add_layer_sizes(layer_sizes)
        close_mounter = getattr(mounter, "aclose", None)
        if close_mounter is not None:
            self._closers.append(close_mounter)
        remote = SociRemoteFS(
            resolver,
            mounter,
            mount_timeout_sec=float(config.mount_timeout_sec),
            soci_v1=config.pull_modes.soci_v1.enable,
            soci_v2=config.pull_modes.soci_v2.enable,
            metrics=metrics,
            stand_ins=load_order,  # a chosen document's zTOC metadata mounts its layers before their zTOCs arrive
        )
        self._closers.append(remote.aclose)
        userxattr = system.needs_userxattr()
        unpack_dir = self.root / "unpack"
        shutil.rmtree(unpack_dir, ignore_errors=True)  # staged downloads of a previous run
        local = LocalUnpacker(
            resolver, unpack_dir, opaque_xattr="user.overlay.opaque" if userxattr else "trusted.overlay.opaque"
        )
        snapshotter = Snapshotter(
            snapshotter_root,
            SqliteMetaStore(snapshotter_root / "metadata.db"),
            remote,
            local=local,
            options=SnapshotterOptions(
                min_layer_size=config.snapshotter.min_layer_size,
                allow_invalid_mounts_on_restart=config.snapshotter.allow_invalid_mounts_on_restart,
                userxattr=userxattr,
            ),
            metrics=metrics,
        )
        try:
            await snapshotter.restore()
            restored = getattr(mounter, "restored", None)
            if restored is not None:
                await restored()
            await self._serve(snapshotter, registry, image_proxy)
        finally:
            unmount = self.stop_signal == signal.SIGINT
            await snapshotter.aclose(unmount=unmount)
            for close in reversed(self._closers):
                await close()
            log.info("exiting", extra={"cleanup": unmount})

    async def _serve(
        self, snapshotter: Snapshotter, registry: CollectorRegistry | None, image_proxy: ImageServiceProxy | None
    ) -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((snapshots_handler(SnapshotsService(snapshotter)),))
        if image_proxy is not None:
            # upstream serves CRI's ImageService on the snapshotter's own socket (the kubelet's
            # --image-service-endpoint), so the socket's 0660 mode guards both
            server.add_generic_rpc_handlers((image_proxy.handler(),))
            log.info("serving the CRI image service proxy", extra={"image_service_path": image_proxy.target})
        address = self.options.address
        proxy: _FdProxy | None = None
        if address.startswith("fd://"):
            fds = systemd.listen_fds()
            if fds:
                path = self.root / "grpc.sock"
                proxy = _FdProxy(fds[0], path)
            else:
                log.warning("no socket-activation file descriptors; listening on %s", DEFAULT_ADDRESS)
                path = Path(DEFAULT_ADDRESS)
        else:
            path = socket_path(address)
        path.parent.mkdir(parents=True, exist_ok=True)
        _check_not_served(path)
        old_umask = os.umask(0o117)  # the socket is never world-accessible, not even briefly
        try:
            if server.add_insecure_port(f"unix:{path}") == 0:
                raise FailedPrecondition(f"cannot listen on {path}")
        finally:
            os.umask(old_umask)
        os.chmod(path, SOCKET_MODE)
        await server.start()
        if proxy is not None:
            await proxy.start()
        metrics_server: MetricsServer | None = None
        if registry is not None:
            metrics_server = MetricsServer(registry, self.config.metrics_address, self.config.metrics_network)
            await metrics_server.start()
        systemd.notify("READY=1")
        log.info("soci-snapshotter-grpc successfully started", extra={"address": address})
        try:
            await self._stopping.wait()
        finally:
            systemd.notify("STOPPING=1")
            if proxy is not None:
                await proxy.aclose()
            await server.stop(STOP_GRACE_SEC)
            if metrics_server is not None:
                await metrics_server.aclose()


async def run_daemon(options: DaemonOptions) -> None:
    daemon = Daemon(options)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, daemon.request_stop, signum)
    await daemon.run()
