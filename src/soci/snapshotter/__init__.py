"""containerd snapshotter semantics: metadata, mounts, the Prepare decision tree, the gRPC service.

``labels`` parses what clients say about a layer; ``metastore`` keeps names, kinds, parents and labels;
``mounts`` builds overlay/bind mounts; ``remote`` finds SOCI indexes and hands layers to a lazy
filesystem; ``local`` unpacks whole layers; ``snapshotter`` decides between them; ``service`` speaks
containerd's Snapshots API.
"""
