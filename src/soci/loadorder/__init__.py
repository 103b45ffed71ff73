"""Workload-specific load order documents (LOD): record, store next to the image, select, replay.

``formats.load_order`` is the pure document; this package does the I/O around it:

* ``record``: the daemon's read log (every FUSE read: time, layer, path, offset, length) and turning a
  window of it into a document;
* ``store``: the document as an OCI artifact whose subject is the image manifest (referrers API or its
  tag fallback), never touching the image or its SOCI index;
* ``select``: which document a mount uses (snapshot label, config rules, default);
* ``replay``: segments → spans, fetched in order ahead of the background fetcher;
* ``export``: a document → upstream SOCI prefetch artifacts;
* ``service``: the daemon side, tying the above to layer mounts (best effort: never fails a mount).
"""
