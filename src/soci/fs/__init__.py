"""The lazy layer filesystem: layers served through one FUSE mount, span by span, verified before use.

Entry points: ``layer.LayerResolver`` (open layers from ``layer.LayerRequest``), ``mount.LazyMount`` (the one
pyfuse3 mount; a directory per layer), ``options.FsOptions`` (upstream's config keys), ``unpack.unpack_layer``
(layers without a zTOC). See docs/architecture.md, "Lazy filesystem".
"""
