"""The daemon side: attach the read log to mounted layers, choose a document per image, replay it.

Everything here is best effort and off the mount's path: ``layer_opened`` only starts a task. A missing,
malformed, oversized or mismatched document is logged (and counted) once per image, and the layer is
served by plain lazy loading.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from soci.errors import SociError
from soci.formats.load_order import LoadOrder, check_layers, ztoc_metadata_of
from soci.fs.background import BackgroundFetcher
from soci.fs.layer import Layer
from soci.loadorder.record import READ_LOG, ReadLog
from soci.loadorder.replay import MAX_CONCURRENCY, ReplayScheduler
from soci.loadorder.select import Choice, Rule, choose
from soci.loadorder.store import fetch_document, fetch_ztoc_metadata, find_load_order
from soci.registry import RegistryClient

log = logging.getLogger(__name__)

OP_SELECTED = "load_order_selected"
OP_REJECTED = "load_order_rejected"
_DOCUMENT_CACHE_ENTRIES = 64


class Counter(Protocol):
    def count(self, operation: str, layer: str = "") -> None: ...


@dataclass(frozen=True, slots=True)
class LoadOrderOptions:
    """``[load_order]`` of the daemon config."""

    record: bool = False
    default: str = ""
    rules: tuple[Rule, ...] = ()
    max_concurrency: int = MAX_CONCURRENCY
    start_timeout_sec: float = 10.0
    """Longest wait for the image's last lazy layer to mount before a replay starts anyway."""


@dataclass(frozen=True, slots=True)
class MountedImage:
    """What a layer mount knows about its image."""

    client: RegistryClient
    repo: str
    image_ref: str
    manifest_digest: str
    layers: tuple[str, ...]
    namespace: str = ""
    label: str = ""
    """The snapshot's load order label (empty: none)."""
    last_lazy_layer: str = ""
    """The image's topmost layer with a zTOC: once it is mounted, the pull has mounted every layer."""


_Fetch = tuple["asyncio.Future[LoadOrder | None]", "asyncio.Future[Mapping[str, bytes]]"]
"""A document being fetched: (the document, or None when there is none to use; its zTOC metadata)."""


class LoadOrderService:
    def __init__(
        self, root: Path, options: LoadOrderOptions | None = None, *, background: BackgroundFetcher | None = None
    ) -> None:
        self.options = options or LoadOrderOptions()
        self._scheduler = ReplayScheduler(max_concurrency=self.options.max_concurrency, background=background)
        self._log = ReadLog(root / READ_LOG) if self.options.record else None
        self._documents: dict[tuple[str, str], _Fetch] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._metrics: Counter | None = None
        self._pulled: dict[str, asyncio.Event] = {}  # manifest digest -> its last lazy layer is mounted
        # (manifest digest, name) -> (the fetched document, whether it names only the image's layers)
        self._verdicts: dict[tuple[str, str], tuple[LoadOrder, bool]] = {}

    def set_metrics(self, metrics: Counter) -> None:
        self._metrics = metrics

    def choose(self, image: MountedImage) -> Choice | None:
        return choose(image.label, image.image_ref, image.namespace, self.options.rules, self.options.default)

    async def ztoc_stand_ins(self, image: MountedImage) -> dict[str, bytes]:
        """zTOC digest -> that zTOC's metadata (compressed, ``formats.load_order.decode_ztoc_metadata``) from the
        document chosen for ``image``; empty when there is none. Resolved as soon as the artifact's metadata
        layer is in, before the document itself (or with the document, when that carries it inline)."""
        choice = self.choose(image)
        if choice is None:
            return {}
        # the artifact's metadata layer comes before its document, and is all a mount needs. It is used by zTOC
        # digest, for the zTOCs of the image's own index: its size is checked at the mount and its bytes against
        # the zTOC once that is fetched, whatever the document's verdict
        return dict(await asyncio.shield(self._fetching(image, choice)[1]))

    def image_preparing(self, image: MountedImage) -> None:
        """A layer of ``image`` is being mounted: start fetching its chosen document, so that the replay of
        its first layer need not wait a round trip for it (once per image: the document is cached)."""
        choice = self.choose(image)
        if choice is not None:
            self._fetching(image, choice)

    def layer_mounted(self, layer: Layer) -> None:
        """Record the layer's reads (recording mode)."""
        if self._log is not None:
            self._log.attach(layer)

    def layer_closed(self, layer: Layer) -> None:
        """The layer is no longer served (unmounted, or its mount failed after it opened): stop replaying it."""
        self._scheduler.drop(layer)

    def layer_opened(self, layer: Layer, image: MountedImage) -> None:
        """Start replaying the chosen document, if any, on the layer: its spans and tree are there, and its
        replay need not wait for its metadata image to be written and mounted."""
        choice = self.choose(image)
        if choice is None:
            return
        pulled = self._pulled.setdefault(image.manifest_digest, asyncio.Event())
        self._forget_pulled()
        if layer.digest == image.last_lazy_layer or not image.last_lazy_layer:
            pulled.set()
        self._start(self._replay(layer, image, choice))

    def _start(self, work: Coroutine[object, object, object]) -> None:
        task = asyncio.get_running_loop().create_task(work, name="soci-load-order")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_idle(self) -> None:
        """Wait for the replays started so far (tests, benchmarks)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _replay(self, layer: Layer, image: MountedImage, choice: Choice) -> None:
        document = await self._document(image, choice)
        if document is None or not self._fits(document, image, choice):
            return
        entry = document.layer(layer.digest)
        if entry is None or not entry.segments:
            return
        # Layers mount one after another, each fetching its zTOC first: replaying the lower layers meanwhile
        # would slow down the mounts the container waits for. Start once the pull has mounted them all, unless
        # the document lets every layer mount without the network: the link is then idle during the pull.
        pulled = self._pulled.get(image.manifest_digest)
        if pulled is not None and not pulled.is_set() and not _mounts_offline(document, image):
            try:
                await asyncio.wait_for(pulled.wait(), self.options.start_timeout_sec)
            except TimeoutError:
                log.debug("load order %s: image %s is not fully mounted; replaying anyway", choice.name,
                          image.manifest_digest)  # fmt: skip
        try:
            await self._scheduler.add(layer, entry.segments, name=choice.name, fetch_points=entry.fetch_points)
        except Exception:  # never let a replay bug reach the daemon
            log.exception("load order %s: replay of layer %s failed", choice.name, layer.digest)

    def _forget_pulled(self) -> None:
        while len(self._pulled) > _DOCUMENT_CACHE_ENTRIES:
            del self._pulled[next(iter(self._pulled))]

    async def _document(self, image: MountedImage, choice: Choice) -> LoadOrder | None:
        return await asyncio.shield(self._fetching(image, choice)[0])

    def _fetching(self, image: MountedImage, choice: Choice) -> _Fetch:
        """The futures of the chosen document and of its zTOC metadata, its fetch started if need be."""
        key = (image.manifest_digest, choice.name)
        fetch = self._documents.get(key)
        if fetch is None:
            loop = asyncio.get_running_loop()
            fetch = self._documents[key] = (loop.create_future(), loop.create_future())
            while len(self._documents) > _DOCUMENT_CACHE_ENTRIES:
                del self._documents[next(iter(self._documents))]
            self._start(self._fetch(key, image, choice, fetch))
        return fetch

    async def _fetch(self, key: tuple[str, str], image: MountedImage, choice: Choice, fetch: _Fetch) -> None:
        document, metadata = fetch
        loaded = None
        try:
            loaded = await self._load(image, choice, metadata)
        finally:
            if not metadata.done():  # a document with its metadata inline, or none
                metadata.set_result({} if loaded is None else ztoc_metadata_of(loaded))
            document.set_result(loaded)
            if loaded is None and self._documents.get(key) is fetch:
                del self._documents[key]  # look again next time: the document may have been fixed

    def _fits(self, document: LoadOrder, image: MountedImage, choice: Choice) -> bool:
        """Whether the document names only layers of the image. Decided, logged and counted once per fetched
        document: it is fetched before the image's layers are known (``image_preparing``)."""
        key = (image.manifest_digest, choice.name)
        verdict = self._verdicts.get(key)
        if verdict is not None and verdict[0] is document:
            return verdict[1]
        where = _where(image, choice)
        try:
            check_layers(document, image.layers)
        except SociError as exc:
            log.warning("load order %s ignored (chosen by %s): %s", choice.name, choice.reason, exc, extra=where)
            self._count(OP_REJECTED, choice.name)
            fits = False
        else:
            log.info("load order %s chosen by %s: %d segments", choice.name, choice.reason,
                     document.segment_count, extra=where)  # fmt: skip
            self._count(OP_SELECTED, f"{choice.name} ({choice.reason})")
            fits = True
        self._verdicts[key] = (document, fits)
        while len(self._verdicts) > _DOCUMENT_CACHE_ENTRIES:
            del self._verdicts[next(iter(self._verdicts))]
        return fits

    async def _load(
        self, image: MountedImage, choice: Choice, metadata: asyncio.Future[Mapping[str, bytes]]
    ) -> LoadOrder | None:
        """The document, fetched after its zTOC metadata (resolving ``metadata`` as soon as that is in); its
        layers are checked against the image's at once if they are known, else where it is used (``_fits``)."""
        client = image.client
        try:
            artifact = await find_load_order(client, image.repo, image.manifest_digest, choice.name)
            stand_ins = await fetch_ztoc_metadata(client, image.repo, artifact)
            if stand_ins:
                metadata.set_result(stand_ins)
            document = await fetch_document(client, image.repo, artifact, stand_ins)
        except SociError as exc:
            log.warning("load order %s ignored (chosen by %s): %s", choice.name, choice.reason, exc,
                        extra=_where(image, choice))  # fmt: skip
            self._count(OP_REJECTED, choice.name)
            return None
        if image.layers:  # known: say at once whether the document is used
            self._fits(document, image, choice)
        return document

    def _count(self, operation: str, value: str) -> None:
        if self._metrics is not None:
            self._metrics.count(operation, value)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self._scheduler.aclose()
        if self._log is not None:
            self._log.close()


def _mounts_offline(document: LoadOrder, image: MountedImage) -> bool:
    """Whether every layer of ``image`` mounts from ``document``'s zTOC metadata: no zTOC fetch and no layer
    downloaded whole for want of an index (an image layer the document has no metadata for)."""
    with_metadata = {entry.digest for entry in document.layers if entry.ztoc_metadata}
    return bool(image.layers) and with_metadata.issuperset(image.layers)


def _where(image: MountedImage, choice: Choice) -> dict[str, str]:
    return {"image": image.image_ref, "manifest": image.manifest_digest, "load_order": choice.name,
            "reason": choice.reason}  # fmt: skip
