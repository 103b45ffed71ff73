"""ctypes bindings to an inflate implementation that exposes what zran needs and CPython's zlib hides.

Checkpointing needs ``inflate(Z_BLOCK)`` and ``data_type``; resuming at a checkpoint needs ``inflatePrime`` and
``inflateSetDictionary``. Two libraries provide them with the same semantics:

* ``zlib-ng``: the ``zng_*`` native API, exported (unofficially) by the ``zlib_ng`` wheel's extension module.
  About twice as fast as zlib 1.2.x.
* ``libz``: the system ``libz.so.1``.

ctypes releases the GIL for the duration of every foreign call, so inflating in threads runs in parallel.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from soci.errors import InvalidArgument, Unavailable

BACKEND_ENV = "SOCI_ZLIB_BACKEND"
ZLIB_NG = "zlib-ng"
LIBZ = "libz"
_PREFERENCE = (ZLIB_NG, LIBZ)

Z_OK = 0
Z_STREAM_END = 1
Z_NEED_DICT = 2
Z_ERRNO = -1
Z_STREAM_ERROR = -2
Z_DATA_ERROR = -3
Z_MEM_ERROR = -4
Z_BUF_ERROR = -5
Z_NO_FLUSH = 0
Z_BLOCK = 5

WBITS_RAW = -15
WBITS_AUTO = 47  # 32 + 15: gzip or zlib header, detected automatically

# inflate() data_type bits
DT_BLOCK_BOUNDARY = 128  # stopped at the end of a block or right after a stream header
DT_LAST_BLOCK = 64  # the block just finished (or about to start) is the member's last
DT_BITS_MASK = 7  # unused bits left in the last consumed byte


class _ZStream(ctypes.Structure):
    """zlib's ``z_stream`` (LP64)."""

    _fields_ = (
        ("next_in", ctypes.c_void_p),
        ("avail_in", ctypes.c_uint),
        ("total_in", ctypes.c_ulong),
        ("next_out", ctypes.c_void_p),
        ("avail_out", ctypes.c_uint),
        ("total_out", ctypes.c_ulong),
        ("msg", ctypes.c_char_p),
        ("state", ctypes.c_void_p),
        ("zalloc", ctypes.c_void_p),
        ("zfree", ctypes.c_void_p),
        ("opaque", ctypes.c_void_p),
        ("data_type", ctypes.c_int),
        ("adler", ctypes.c_ulong),
        ("reserved", ctypes.c_ulong),
    )


class _ZngStream(ctypes.Structure):
    """zlib-ng's native ``zng_stream``: totals are size_t and ``adler`` is uint32 (unlike z_stream)."""

    _fields_ = (
        ("next_in", ctypes.c_void_p),
        ("avail_in", ctypes.c_uint32),
        ("total_in", ctypes.c_size_t),
        ("next_out", ctypes.c_void_p),
        ("avail_out", ctypes.c_uint32),
        ("total_out", ctypes.c_size_t),
        ("msg", ctypes.c_char_p),
        ("state", ctypes.c_void_p),
        ("zalloc", ctypes.c_void_p),
        ("zfree", ctypes.c_void_p),
        ("opaque", ctypes.c_void_p),
        ("data_type", ctypes.c_int32),
        ("adler", ctypes.c_uint32),
        ("reserved", ctypes.c_ulong),
    )


@dataclass(frozen=True, slots=True)
class Backend:
    """One loaded inflate library: its stream struct and functions, all taking a stream pointer first."""

    name: str
    stream_type: type[ctypes.Structure]
    init2: Callable[[Any, int], int]
    inflate: Callable[[Any, int], int]
    prime: Callable[[Any, int, int], int]
    set_dictionary: Callable[[Any, Any, int], int]
    reset2: Callable[[Any, int], int]
    end: Callable[[Any], int]


def _bind(lib: ctypes.CDLL, name: str, argtypes: list[Any]) -> Any:
    fn = getattr(lib, name)
    fn.argtypes = argtypes
    fn.restype = ctypes.c_int
    return fn


def _load_zlib_ng() -> Backend:
    import zlib_ng.zlib_ng as module  # the extension module that happens to export zng_*

    lib = ctypes.CDLL(module.__file__)
    ptr = ctypes.POINTER(_ZngStream)
    return Backend(
        name=ZLIB_NG,
        stream_type=_ZngStream,
        init2=_bind(lib, "zng_inflateInit2", [ptr, ctypes.c_int32]),
        inflate=_bind(lib, "zng_inflate", [ptr, ctypes.c_int32]),
        prime=_bind(lib, "zng_inflatePrime", [ptr, ctypes.c_int32, ctypes.c_int32]),
        set_dictionary=_bind(lib, "zng_inflateSetDictionary", [ptr, ctypes.c_void_p, ctypes.c_uint32]),
        reset2=_bind(lib, "zng_inflateReset2", [ptr, ctypes.c_int32]),
        end=_bind(lib, "zng_inflateEnd", [ptr]),
    )


def _load_libz() -> Backend:
    path = ctypes.util.find_library("z") or "libz.so.1"
    lib = ctypes.CDLL(path)
    lib.zlibVersion.restype = ctypes.c_char_p
    lib.zlibVersion.argtypes = []
    version = lib.zlibVersion()
    ptr = ctypes.POINTER(_ZStream)
    init2_ = _bind(lib, "inflateInit2_", [ptr, ctypes.c_int, ctypes.c_char_p, ctypes.c_int])
    size = ctypes.sizeof(_ZStream)

    def init2(strm: Any, wbits: int) -> int:
        # inflateInit2 is a macro; the real entry point checks the caller's zlib version and struct size.
        return int(init2_(strm, wbits, version, size))

    return Backend(
        name=LIBZ,
        stream_type=_ZStream,
        init2=init2,
        inflate=_bind(lib, "inflate", [ptr, ctypes.c_int]),
        prime=_bind(lib, "inflatePrime", [ptr, ctypes.c_int, ctypes.c_int]),
        set_dictionary=_bind(lib, "inflateSetDictionary", [ptr, ctypes.c_void_p, ctypes.c_uint]),
        reset2=_bind(lib, "inflateReset2", [ptr, ctypes.c_int]),
        end=_bind(lib, "inflateEnd", [ptr]),
    )


def _try_load(loader: Callable[[], Backend]) -> Backend | str:
    try:
        return loader()
    except (ImportError, OSError, AttributeError) as exc:
        return f"{type(exc).__name__}: {exc}"


# Loaded once at import: a missing library or symbol shows up here, not in the middle of a layer.
_LOADED: dict[str, Backend | str] = {ZLIB_NG: _try_load(_load_zlib_ng), LIBZ: _try_load(_load_libz)}


def available_backends() -> list[str]:
    """Names of the usable backends, fastest first."""
    return [name for name in _PREFERENCE if isinstance(_LOADED[name], Backend)]


def get_backend(name: str | None = None) -> Backend:
    """The named backend; by default the one forced by $SOCI_ZLIB_BACKEND, else the fastest available."""
    if name is None:
        name = os.environ.get(BACKEND_ENV) or None
        if name is None:
            for candidate in _PREFERENCE:
                loaded = _LOADED[candidate]
                if isinstance(loaded, Backend):
                    return loaded
            reasons = "; ".join(f"{n}: {_LOADED[n]}" for n in _PREFERENCE)
            raise Unavailable(f"no inflate backend could be loaded ({reasons})")
    if name not in _LOADED:
        raise InvalidArgument(f"unknown zlib backend {name!r}: want one of {', '.join(_PREFERENCE)}")
    loaded = _LOADED[name]
    if isinstance(loaded, str):
        raise Unavailable(f"zlib backend {name} is unavailable: {loaded}")
    return loaded


def backend_name() -> str:
    """Name of the backend used when none is passed explicitly."""
    return get_backend().name


class Stream:
    """One inflate stream on one backend; close() (or garbage collection) frees the library state."""

    __slots__ = ("_open", "backend", "ptr", "s")

    def __init__(self, backend: Backend, wbits: int) -> None:
        self.backend = backend
        self.s = backend.stream_type()
        self.ptr = ctypes.byref(self.s)
        self._open = False
        ret = backend.init2(self.ptr, wbits)
        if ret != Z_OK:
            raise MemoryError(f"{backend.name}: inflateInit2 failed with code {ret}")
        self._open = True

    def message(self, ret: int) -> str:
        """The library's error text for the last call (falls back to the return code)."""
        msg = self.s.msg
        if msg:
            return bytes(msg).decode("utf-8", "replace")
        return {
            Z_DATA_ERROR: "data error",
            Z_MEM_ERROR: "out of memory",
            Z_NEED_DICT: "needs a preset dictionary",
            Z_STREAM_ERROR: "stream error",
            Z_BUF_ERROR: "no progress possible",
        }.get(ret, f"code {ret}")

    def close(self) -> None:
        if self._open:
            self._open = False
            self.backend.end(self.ptr)

    def __del__(self) -> None:
        self.close()
