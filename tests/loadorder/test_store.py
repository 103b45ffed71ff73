"""Documents in a real registry (docker-registry 2.8: referrers through the tag fallback), and the daemon
side's handling of missing, malformed and mismatched documents."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from lo_layers import big_files_layer

from soci.errors import FormatError, NotFound
from soci.formats import load_order as lo
from soci.formats.digest import sha256_digest
from soci.formats.oci import MEDIA_TYPE_OCI_MANIFEST, Descriptor, Manifest
from soci.formats.soci_index import EMPTY_CONFIG, EMPTY_CONFIG_DIGEST
from soci.fs.layer import LayerRequest, LayerResolver
from soci.fs.ztoc_reader import ztoc_without_windows
from soci.loadorder.service import OP_REJECTED, OP_SELECTED, LoadOrderOptions, LoadOrderService, MountedImage
from soci.loadorder.store import (
    artifact_manifest,
    fetch_load_order,
    fetch_ztoc_metadata,
    find_load_order,
    list_load_orders,
    push_load_order,
    remove_load_orders,
)
from soci.registry import RegistryClient
from soci.testing.registry_server import RegistryServer, registry_available

pytestmark = [
    pytest.mark.registry,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not registry_available(), reason="docker-registry is not installed"),
]

LAYER = big_files_layer(files=4, size=100_000, seed=3)


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


def _image(registry: RegistryServer, repo: str) -> Descriptor:
    digest, data = registry.push_image(repo, "v1", [LAYER.blob])
    return Descriptor(MEDIA_TYPE_OCI_MANIFEST, digest, len(data))


def _document(name: str = "heads", layer: str = LAYER.digest) -> lo.LoadOrder:
    reads = [lo.Read(i, layer, name_, 0, 4096) for i, name_ in enumerate(LAYER.names)]
    return lo.build_load_order(name, reads)


async def test_push_list_fetch_replace_remove(registry: RegistryServer) -> None:
    subject = _image(registry, "lo/store")
    async with RegistryClient(registry.host, plain_http=True) as client:
        first = await push_load_order(client, "lo/store", subject, _document())
        await push_load_order(client, "lo/store", subject, _document("other"))
        assert {s.name for s in await list_load_orders(client, "lo/store", subject.digest)} == {"heads", "other"}
        assert await fetch_load_order(client, "lo/store", subject.digest, "heads") == _document()
        changed = lo.build_load_order("heads", [lo.Read(0, LAYER.digest, LAYER.names[0], 0, 1)])
        second = await push_load_order(client, "lo/store", subject, changed)
        assert second != first
        listed = await list_load_orders(client, "lo/store", subject.digest, "heads")
        assert [s.manifest_digest for s in listed] == [second]  # pushing a name replaces it
        assert await fetch_load_order(client, "lo/store", subject.digest, "heads") == changed
        assert await remove_load_orders(client, "lo/store", subject.digest, "heads") == [second]
        with pytest.raises(NotFound, match="no load order named 'heads'"):
            await fetch_load_order(client, "lo/store", subject.digest, "heads")
        assert [s.name for s in await list_load_orders(client, "lo/store", subject.digest)] == ["other"]
        # the image is untouched
        _, _, digest = await client.get_manifest("lo/store", "v1")
        assert digest == subject.digest


async def test_same_image_under_another_name_uses_the_same_document(registry: RegistryServer) -> None:
    """A document refers to layers by digest: recorded for one reference, it applies to the same image
    pushed elsewhere."""
    first = _image(registry, "lo/name-a")
    second = _image(registry, "lo/name-b")
    assert first.digest == second.digest
    async with RegistryClient(registry.host, plain_http=True) as client:
        await push_load_order(client, "lo/name-b", second, _document())
        document = await fetch_load_order(client, "lo/name-b", second.digest, "heads")
    lo.check_layers(document, [LAYER.digest])


async def _push_raw(client: RegistryClient, repo: str, subject: Descriptor, name: str, data: bytes) -> None:
    """An artifact holding arbitrary bytes (as a broken or hostile tool would push)."""
    manifest = artifact_manifest(data, name, subject)
    await client.push_blob(repo, "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", b"{}", 2)
    await client.push_blob(repo, sha256_digest(data), data, len(data))
    body = manifest.marshal()
    digest = await client.put_manifest(repo, sha256_digest(body), body, MEDIA_TYPE_OCI_MANIFEST)
    entry = {"mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": digest, "size": len(body),
             "artifactType": lo.ARTIFACT_TYPE_LOAD_ORDER, "annotations": dict(manifest.annotations or {})}  # fmt: skip
    await client.add_referrer(repo, subject.digest, entry)


class _Counts:
    def __init__(self) -> None:
        self.counts: list[tuple[str, str]] = []

    def count(self, operation: str, layer: str = "") -> None:
        self.counts.append((operation, layer))


def _counted_service(root: Path, options: LoadOrderOptions) -> tuple[LoadOrderService, _Counts]:
    service = LoadOrderService(root, options)
    counts = _Counts()
    service.set_metrics(counts)
    return service, counts


async def test_bad_documents_are_rejected_with_a_message_and_never_fail_the_mount(
    registry: RegistryServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = "lo/bad"
    subject = _image(registry, repo)
    bad = {
        "malformed": b'{"version": "1", "name": "malformed", "layers": [{"digest": "sha256:zz"}]}',
        "oversized": b" " * (lo.MAX_DOCUMENT_BYTES + 1),
        "mismatched": lo.marshal(_document("mismatched", layer="sha256:" + "e" * 64)),
    }
    expected = {
        "malformed": "not a sha256 digest",
        "oversized": "over the limit",
        "mismatched": "which the image does not have",
        "absent": "no load order named 'absent'",
    }
    request, blob = LAYER.request(65536)
    with ThreadPoolExecutor(2) as executor:
        async with RegistryClient(registry.host, plain_http=True) as client:
            for name, data in bad.items():
                await _push_raw(client, repo, subject, name, data)
            for name, message in expected.items():
                service, counts = _counted_service(tmp_path, LoadOrderOptions())
                resolver = LayerResolver(tmp_path, executor=executor)
                opened = await resolver.acquire(request)
                image = MountedImage(client, repo, f"{registry.host}/{repo}:v1", subject.digest, (LAYER.digest,),
                                     label=name)  # fmt: skip
                caplog.clear()
                service.layer_opened(opened, image)
                await service.wait_idle()
                assert counts.counts == [(OP_REJECTED, name)]
                assert message in caplog.text, caplog.text
                # the layer is still served
                ino = opened.tree.resolve(LAYER.names[0].encode())
                assert len(await opened.reader.read(ino, 0, 10)) == 10
                await resolver.release(opened)
                await service.aclose()
    assert blob.reads  # the reads above were served lazily


async def test_a_good_document_is_chosen_logged_counted_and_replayed(
    registry: RegistryServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="soci.loadorder")
    repo = "lo/good"
    subject = _image(registry, repo)
    request, blob = LAYER.request(65536)
    with ThreadPoolExecutor(2) as executor:
        async with RegistryClient(registry.host, plain_http=True) as client:
            await push_load_order(client, repo, subject, _document())
            service, counts = _counted_service(tmp_path, LoadOrderOptions(default="heads"))
            resolver = LayerResolver(tmp_path, executor=executor)
            opened = await resolver.acquire(request)
            try:
                service.layer_opened(opened, MountedImage(client, repo, f"{registry.host}/{repo}:v1",
                                                           subject.digest, (LAYER.digest,)))  # fmt: skip
                await service.wait_idle()
                assert counts.counts == [(OP_SELECTED, "heads (default)")]
                assert "load order heads chosen by default" in caplog.text
                fetched = len(blob.reads)
                assert fetched > 0
                for name in LAYER.names:
                    await opened.reader.read(opened.tree.resolve(name.encode()), 0, 4096)
                assert len(blob.reads) == fetched  # every head was already loaded
            finally:
                await resolver.release(opened)
                await service.aclose()


async def test_ztoc_metadata_travels_as_the_artifacts_second_layer(
    registry: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = "lo/split"
    subject = _image(registry, repo)
    request, _ = LAYER.request(65536)
    assert request.ztoc is not None
    packed = lo.encode_ztoc_metadata(ztoc_without_windows(request.ztoc))
    plain = _document()
    document = replace(plain, layers=(replace(plain.layers[0], ztoc=request.ztoc_digest, ztoc_metadata=packed),))
    image = MountedImage(RegistryClient(registry.host, plain_http=True), repo, f"{registry.host}/{repo}:v1",
                         subject.digest, (LAYER.digest,))  # fmt: skip
    async with image.client as client:
        digest = await push_load_order(client, repo, subject, document)
        data, _, _ = await client.get_manifest(repo, digest, accept=(MEDIA_TYPE_OCI_MANIFEST,))
        layers = Manifest.unmarshal(data).layers or ()
        assert [layer.media_type for layer in layers] == [lo.MEDIA_TYPE_LOAD_ORDER, lo.MEDIA_TYPE_ZTOC_METADATA]
        assert b"ztoc_metadata" not in await client.get_blob(repo, layers[0].digest, layers[0].size)
        artifact = await find_load_order(client, repo, subject.digest, "heads")
        assert await fetch_ztoc_metadata(client, repo, artifact) == {request.ztoc_digest: packed}
        assert await fetch_load_order(client, repo, subject.digest, "heads") == document  # joined back
        service = LoadOrderService(tmp_path, LoadOrderOptions(default="heads"))
        try:
            assert await service.ztoc_stand_ins(image) == {request.ztoc_digest: packed}
        finally:
            await service.aclose()

        # pushed with the metadata inline, as before the split: read the same way
        monkeypatch.setattr(lo, "split_ztoc_metadata", lambda d: (d, b""))
        digest = await push_load_order(client, repo, subject, document)
        data, _, _ = await client.get_manifest(repo, digest, accept=(MEDIA_TYPE_OCI_MANIFEST,))
        assert [layer.media_type for layer in Manifest.unmarshal(data).layers or ()] == [lo.MEDIA_TYPE_LOAD_ORDER]
        assert await fetch_load_order(client, repo, subject.digest, "heads") == document
        service = LoadOrderService(tmp_path, LoadOrderOptions(default="heads"))
        try:
            assert await service.ztoc_stand_ins(image) == {request.ztoc_digest: packed}
        finally:
            await service.aclose()


async def _push_artifact(
    client: RegistryClient, repo: str, subject: Descriptor, layers: list[tuple[str, bytes]]
) -> None:
    """A load order artifact called "heads" with exactly ``layers`` (media type, bytes), as another tool might
    push it."""
    await client.push_blob(repo, EMPTY_CONFIG_DIGEST, EMPTY_CONFIG, len(EMPTY_CONFIG))
    descriptors = []
    for media_type, blob in layers:
        await client.push_blob(repo, sha256_digest(blob), blob, len(blob))
        descriptors.append(Descriptor(media_type, sha256_digest(blob), len(blob)))
    body = replace(artifact_manifest(b"{}", "heads", subject), layers=tuple(descriptors)).marshal()
    digest = await client.put_manifest(repo, sha256_digest(body), body, MEDIA_TYPE_OCI_MANIFEST)
    entry = {"mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": digest, "size": len(body),
             "artifactType": lo.ARTIFACT_TYPE_LOAD_ORDER, "annotations": {lo.ANNOTATION_NAME: "heads"}}  # fmt: skip
    await client.add_referrer(repo, subject.digest, entry)


async def test_artifact_layers_after_the_document_of_other_types_are_ignored_and_the_rest_is_checked(
    registry: RegistryServer,
) -> None:
    repo = "lo/layers"
    subject = _image(registry, repo)
    request, _ = LAYER.request(65536)
    metadata = _metadata_of(request)
    document = _document()
    bare = replace(document, layers=(replace(document.layers[0], ztoc=metadata["ztoc"]),))
    blob = lo.marshal_ztoc_metadata({metadata["ztoc"]: metadata["ztoc_metadata"]})
    doc_layer, meta_layer = (lo.MEDIA_TYPE_LOAD_ORDER, lo.marshal(bare)), (lo.MEDIA_TYPE_ZTOC_METADATA, blob)
    async with RegistryClient(registry.host, plain_http=True) as client:
        await _push_artifact(client, repo, subject, [doc_layer, meta_layer, ("application/x-later-addition", b"?")])
        fetched = await fetch_load_order(client, repo, subject.digest, "heads")
        assert fetched.layers[0].ztoc_metadata == metadata["ztoc_metadata"]
        for layers in ([meta_layer, doc_layer], [doc_layer, meta_layer, meta_layer], [doc_layer, doc_layer]):
            await _push_artifact(client, repo, subject, layers)
            with pytest.raises(FormatError, match=r"must have one .* layer first, and at most one"):
                await fetch_load_order(client, repo, subject.digest, "heads")


def test_artifact_manifest_shape() -> None:
    subject = Descriptor(MEDIA_TYPE_OCI_MANIFEST, "sha256:" + "a" * 64, 123)
    manifest = Manifest.unmarshal(artifact_manifest(b"{}", "w", subject).marshal())
    assert manifest.artifact_type == lo.ARTIFACT_TYPE_LOAD_ORDER
    assert manifest.subject == subject
    assert manifest.annotations == {lo.ANNOTATION_NAME: "w"}
    assert json.loads(manifest.marshal())["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"


def _metadata_of(request: LayerRequest) -> dict[str, Any]:
    assert request.ztoc is not None
    return {"ztoc": request.ztoc_digest, "ztoc_metadata": lo.encode_ztoc_metadata(ztoc_without_windows(request.ztoc))}


@pytest.mark.parametrize("with_metadata", [False, True])
async def test_replay_waits_for_the_pull_unless_every_layer_mounts_from_the_documents_ztoc_metadata(
    registry: RegistryServer, tmp_path: Path, with_metadata: bool
) -> None:
    repo = f"lo/gate{int(with_metadata)}"
    top = big_files_layer(files=2, size=50_000, seed=4)
    digest, data = registry.push_image(repo, "v1", [LAYER.blob, top.blob])
    subject = Descriptor(MEDIA_TYPE_OCI_MANIFEST, digest, len(data))
    request, blob = LAYER.request(65536)
    upper_request = top.request(65536)[0]
    document = _document()
    if with_metadata:
        lower = replace(document.layers[0], **_metadata_of(request))
        upper = lo.LayerLoadOrder(top.digest, (), **_metadata_of(upper_request))
        document = replace(document, layers=(lower, upper))
    with ThreadPoolExecutor(2) as executor:
        async with RegistryClient(registry.host, plain_http=True) as client:
            await push_load_order(client, repo, subject, document)
            service = LoadOrderService(tmp_path, LoadOrderOptions(default="heads", start_timeout_sec=60))
            resolver = LayerResolver(tmp_path, executor=executor)
            opened = [await resolver.acquire(request)]
            image = MountedImage(client, repo, f"{registry.host}/{repo}:v1", subject.digest,
                                 (LAYER.digest, top.digest), last_lazy_layer=top.digest)  # fmt: skip
            try:
                service.layer_opened(opened[0], image)
                if with_metadata:  # no layer needs the link to mount: the replay does not wait for the upper one
                    await asyncio.wait_for(service.wait_idle(), 30)
                    assert len(blob.reads) > 1
                    return
                await asyncio.sleep(0.5)  # the document is fetched; the replay waits for the upper layer
                assert len(blob.reads) == 1  # the gzip header, read when the layer opened
                opened.append(await resolver.acquire(upper_request))
                service.layer_opened(opened[1], image)
                await service.wait_idle()
                assert len(blob.reads) > 1
            finally:
                for layer in opened:
                    await resolver.release(layer)
                await service.aclose()


async def test_the_document_is_fetched_while_the_first_layer_is_prepared_and_only_once(
    registry: RegistryServer, tmp_path: Path
) -> None:
    repo = "lo/early"
    subject = _image(registry, repo)
    request, blob = LAYER.request(65536)
    with ThreadPoolExecutor(2) as executor:
        async with RegistryClient(registry.host, plain_http=True) as client:
            await push_load_order(client, repo, subject, _document())
            service, counts = _counted_service(tmp_path, LoadOrderOptions(default="heads"))
            image = MountedImage(client, repo, f"{registry.host}/{repo}:v1", subject.digest, (LAYER.digest,))
            service.image_preparing(image)
            await service.wait_idle()
            assert counts.counts == [(OP_SELECTED, "heads (default)")]  # before any layer is mounted
            service.image_preparing(image)  # the next layer of the same image
            resolver = LayerResolver(tmp_path, executor=executor)
            opened = await resolver.acquire(request)
            try:
                header_reads = len(blob.reads)
                service.layer_opened(opened, image)
                await service.wait_idle()
                assert counts.counts == [(OP_SELECTED, "heads (default)")]  # the document was not fetched again
                assert len(blob.reads) > header_reads  # and it was replayed
            finally:
                await resolver.release(opened)
                await service.aclose()
