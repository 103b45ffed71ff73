"""Startup-benchmark workloads: an image recipe, a command, and the line that means "ready".

Every image is built offline from Debian packages (debootstrap + apt), PyPI wheels (downloaded on the host,
installed with --no-index in the chroot) and npm packages (installed on the host into the layer's tree);
nothing comes from a public container registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Workload:
    name: str
    command: tuple[str, ...]
    ready: str
    """Substring of a stdout/stderr line printed once the application is ready."""
    apt: tuple[str, ...] = ()
    pip: tuple[str, ...] = ()
    npm: tuple[str, ...] = ()
    npm_app: str = ""
    """JavaScript written to /app/server.js (with npm packages installed in /app)."""
    extra_layers: int = 0
    """Split the application part into this many extra layers (the many-layer workload)."""
    filler_mb: int = 0
    """Incompressible filler spread over the extra layers, never read by the command."""
    synthetic_mb: int = 0
    """If set, no Debian base: the host's dash and libc plus this many MiB of random files the command never reads
    (a small, fast image for the CI smoke test)."""
    notes: str = ""
    tags: tuple[str, ...] = field(default=())


_PY_IMPORTS = "import numpy, scipy.linalg, pandas, sklearn.linear_model; print('READY', numpy.__version__)"
_FFMPEG = (
    "ffmpeg -hide_banner -loglevel error -f lavfi -i testsrc=duration=3:size=640x360:rate=25 "
    "-c:v mpeg4 -q:v 5 -y /tmp/out.mp4 && echo READY"
)
_POSTGRES = (
    "mkdir -p /tmp/pg /run/postgresql && chown postgres /tmp/pg /run/postgresql && "
    # --no-sync: the benchmark measures reading the image, not how fast this VM's disk flushes a new cluster
    "su postgres -s /bin/sh -c '/usr/lib/postgresql/15/bin/initdb --no-sync -D /tmp/pg >/dev/null && "
    "exec /usr/lib/postgresql/15/bin/postgres -D /tmp/pg -k /tmp'"
)
_NODE_APP = """
const express = require('express');
require('lodash'); require('moment'); require('axios'); require('@babel/core'); require('typescript');
const app = express();
app.get('/', (req, res) => res.send('ok'));
const server = app.listen(0, () => { console.log('Server ready'); server.close(); });
"""

WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            name="smoke",
            command=("/bin/sh", "-c", "echo READY"),
            ready="READY",
            synthetic_mb=24,
            notes="synthetic; CI smoke test",
        ),
        Workload(
            name="shell",
            command=("/bin/sh", "-c", "ls /usr/bin > /dev/null && echo READY"),
            ready="READY",
            notes="debootstrap minbase only (one layer)",
        ),
        Workload(
            name="python-ml",
            command=("/opt/venv/bin/python", "-c", _PY_IMPORTS),
            ready="READY",
            apt=("python3", "python3-venv"),
            pip=("numpy", "scipy", "pandas", "scikit-learn"),
        ),
        Workload(
            name="ffmpeg",
            command=("/bin/sh", "-c", _FFMPEG),
            ready="READY",
            apt=("ffmpeg",),
        ),
        Workload(
            name="postgres",
            command=("/bin/sh", "-c", _POSTGRES),
            ready="database system is ready to accept connections",
            apt=("postgresql-15",),
        ),
        Workload(
            name="node",
            command=("/usr/bin/node", "/app/server.js"),
            ready="Server ready",
            apt=("nodejs",),
            npm=("express", "lodash", "moment", "axios", "@babel/core", "typescript", "webpack", "eslint", "jest"),
            npm_app=_NODE_APP,
        ),
        Workload(
            name="big",
            command=("/opt/venv/bin/python", "-c", _PY_IMPORTS),
            ready="READY",
            apt=("python3", "python3-venv", "ffmpeg", "postgresql-15", "gcc", "g++"),
            pip=("numpy", "scipy", "pandas", "scikit-learn", "matplotlib", "sympy"),
            extra_layers=22,
            filler_mb=400,
            notes="over 1 GB in 20+ layers; the command reads a small part of it",
        ),
    )
}
