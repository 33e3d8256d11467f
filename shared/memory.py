"""Giving freed memory back to the operating system (glibc malloc; elsewhere these do nothing).

glibc serves an allocation above its mmap threshold (128 KiB at start) from its own mapping, unmapped when freed; but
the first such free raises the threshold (up to 32 MiB), after which buffers of that size come from the heap and a
burst of them (a thousand partial WebSocket frames, a big decode) stays in the process's RSS after it is freed.
``fixed_mmap_threshold`` pins the threshold (big buffers always come back when freed); ``trim`` returns the free
pages of the heap (cheap: a few ms for a heap of a few hundred MB)."""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("shared.memory")
_M_MMAP_THRESHOLD = -3
_libc = None


def _lib():
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc = lib if hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt") else False
        except OSError:
            _libc = False
    return _libc or None


def fixed_mmap_threshold(nbytes: int = 128 * 1024) -> bool:
    lib = _lib()
    ok = bool(lib and lib.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(nbytes)))
    if not ok:
        log.info("mallopt not available: freed buffers may stay in RSS")
    return ok


def trim() -> bool:
    lib = _lib()
    return bool(lib and lib.malloc_trim(ctypes.c_size_t(0)))
