"""A second, independent zTOC marshaller: the flatbuffers runtime's Builder driven call by call.

Tests compare ``soci.formats.ztoc_codec.marshal_ztoc`` with it for byte identity; benchmarks use it as the
speed baseline.
"""

from __future__ import annotations

import flatbuffers

from soci.formats.ztoc import Ztoc


def marshal_with_builder(z: Ztoc) -> bytes:
    """A zTOC marshalled by the flatbuffers package's Builder, called in upstream's order, one call at a time."""
    b = flatbuffers.Builder(0)
    version = b.CreateString(z.version.encode())
    tool = b.CreateString(z.build_tool_identifier.encode())
    offsets = [0] * len(z.entries)
    for i in range(len(z.entries) - 1, -1, -1):
        e = z.entries[i]
        strings = [
            b.CreateString(s) for s in (e.name, e.type.encode(), e.linkname, e.uname, e.gname, e.mod_time.encode())
        ]
        xattrs = []
        for key, value in sorted(dict(e.pax_records).items()):
            k, v = b.CreateString(key), b.CreateString(value)
            b.StartObject(2)
            b.PrependUOffsetTRelativeSlot(0, k, 0)
            b.PrependUOffsetTRelativeSlot(1, v, 0)
            xattrs.append(b.EndObject())
        b.StartVector(4, len(xattrs), 4)
        for x in reversed(xattrs):
            b.PrependUOffsetTRelative(x)
        xattr_vector = b.EndVector()
        b.StartObject(14)
        b.PrependUOffsetTRelativeSlot(0, strings[0], 0)
        b.PrependUOffsetTRelativeSlot(1, strings[1], 0)
        b.PrependInt64Slot(2, e.uncompressed_offset, 0)
        b.PrependInt64Slot(3, e.uncompressed_size, 0)
        b.PrependUOffsetTRelativeSlot(4, strings[2], 0)
        b.PrependInt64Slot(5, e.mode, 0)
        b.PrependUint32Slot(6, e.uid, 0)
        b.PrependUint32Slot(7, e.gid, 0)
        b.PrependUOffsetTRelativeSlot(8, strings[3], 0)
        b.PrependUOffsetTRelativeSlot(9, strings[4], 0)
        b.PrependUOffsetTRelativeSlot(10, strings[5], 0)
        b.PrependInt64Slot(11, e.devmajor, 0)
        b.PrependInt64Slot(12, e.devminor, 0)
        b.PrependUOffsetTRelativeSlot(13, xattr_vector, 0)
        offsets[i] = b.EndObject()
    b.StartVector(4, len(offsets), 4)
    for o in reversed(offsets):
        b.PrependUOffsetTRelative(o)
    metadata = b.EndVector()
    b.StartObject(1)
    b.PrependUOffsetTRelativeSlot(0, metadata, 0)
    toc = b.EndObject()
    checkpoints = b.CreateByteVector(z.checkpoints)
    digests = [b.CreateString(d.encode()) for d in z.span_digests]
    b.StartVector(4, len(digests), 4)
    for o in reversed(digests):
        b.PrependUOffsetTRelative(o)
    digest_vector = b.EndVector()
    b.StartObject(4)
    b.PrependInt32Slot(1, z.max_span_id, 0)
    b.PrependUOffsetTRelativeSlot(2, digest_vector, 0)
    b.PrependUOffsetTRelativeSlot(3, checkpoints, 0)
    if z.compression_algorithm:
        b.PrependInt8Slot(0, {"gzip": 1, "uncompressed": 2}[z.compression_algorithm], 1)
    info = b.EndObject()
    b.StartObject(6)
    b.PrependUOffsetTRelativeSlot(0, version, 0)
    b.PrependUOffsetTRelativeSlot(1, tool, 0)
    b.PrependUOffsetTRelativeSlot(4, toc, 0)
    b.PrependInt64Slot(2, z.compressed_archive_size, 0)
    b.PrependInt64Slot(3, z.uncompressed_archive_size, 0)
    b.PrependUOffsetTRelativeSlot(5, info, 0)
    b.Finish(b.EndObject())
    return bytes(b.Output())
