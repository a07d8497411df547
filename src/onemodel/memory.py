"""Process memory tuning: fewer glibc malloc arenas for thread-heavy processes."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_ARENA_MAX = -8  # from glibc's malloc.h


def limit_malloc_arenas(count: int = 2) -> bool:
    """Cap glibc's malloc arenas (as MALLOC_ARENA_MAX does); return whether it applied.

    glibc gives busy threads their own arenas (up to 8 per core), which keeps freed memory
    in many places: the model server (a thread per client connection) and threaded
    Gunicorn workers hold less memory with two. An explicit MALLOC_ARENA_MAX wins. Call it
    early, before threads start; forked children inherit the setting.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    library = ctypes.util.find_library("c")
    if library is None:
        return False
    try:
        mallopt = ctypes.CDLL(library).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return False
    return bool(mallopt(_M_ARENA_MAX, count))


def release_free_memory() -> bool:
    """Return freed heap memory to the system (glibc malloc_trim); return whether it ran.

    Called after a model version is released: without it the old model's tensors stay in
    the process's resident size as free heap.
    """
    library = ctypes.util.find_library("c")
    if library is None:
        return False
    try:
        malloc_trim = ctypes.CDLL(library).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(malloc_trim(0))
