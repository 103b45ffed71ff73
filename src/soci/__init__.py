"""Python implementation of the SOCI (Seekable OCI) snapshotter and its CLI.

Packages, in import order (each may import only those after it):
``cli -> daemon -> config -> snapshotter -> (index | fs) -> (registry | store | cache) -> codec -> formats -> errors``.
"""

__version__ = "0.1.0"
