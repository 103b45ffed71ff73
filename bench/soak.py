"""Load soak on loopback: containers from several SOCI images started at once through containerd on the
real FUSE mounter, each reading lazily loaded files and checking their sha256 in three rounds, with a
kill -9 of the daemon after the first round and a start with the same flags while the second round's
reads wait in the kernel. Prints read count, failed reads, peak daemon VmRSS and open descriptors
(sampled every 0.2 s from /proc), descriptors before and after, and the restart gap.

    .venv/bin/python bench/soak.py [--containers 20] [--images 4]

The baseline of the ratios is the same run's daemon before the load (after the images' rpull).
Needs root, containerd, runc, docker-registry, skopeo, FUSE and a static /usr/bin/busybox.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "e2e"))

from e2e_soak import soak

from soci.testing.registry_server import RegistryServer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=20)
    parser.add_argument("--images", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soci-soak-") as tmp, RegistryServer() as registry:
        r = soak(registry, Path(tmp), args.containers, args.images)
    print(f"containers        {r.containers} from {r.images} images, started at once")
    print(f"reads             {r.reads} files (sha256 checked)")
    print(f"failed reads      {len(r.failures)}")
    for line in r.failures[:20]:
        print(f"  {line}")
    print(
        f"peak daemon RSS   {r.peak_rss_kib / 1024:.1f} MiB (before load {r.rss_before_kib / 1024:.1f} MiB, "
        f"ratio {r.peak_rss_kib / r.rss_before_kib:.2f}; {r.daemons_sampled} daemon processes sampled)"
    )
    print(f"peak daemon fds   {r.peak_fds} (before load {r.fds_before}, ratio {r.peak_fds / r.fds_before:.2f})")
    print(f"fds after run     {r.fds_after} (ratio to before {r.fds_after / r.fds_before:.2f})")
    print(f"restart gap       {r.restart_gap_ms:.0f} ms (kill -9 to containerd reaching the new daemon)")
    print(f"wall              {r.wall_sec:.0f} s")
    return 1 if r.failures else 0


if __name__ == "__main__":
    sys.exit(main())
