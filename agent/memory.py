"""Keeping the daemon's resident memory flat under a storm. glibc gives each thread that allocates its
own heap ("arena") and keeps what Python frees for reuse instead of returning it, so a daemon whose
thread pool has parsed a few 10,000-alert payloads stays tens of MB larger for good. Two arenas and a
periodic trim keep it near its idle size. Elsewhere than glibc these are no-ops."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any

__all__ = ["limit_arenas", "trim"]

_M_TRIM_THRESHOLD = -1  # mallopt(3)
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


@functools.cache
def _libc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only: raises AttributeError elsewhere
        return libc
    except (OSError, AttributeError):
        return None


def limit_arenas(arenas: int = 2) -> None:
    """Call before threads start: later threads share `arenas` heaps instead of one each, and blocks of
    256 KiB or more (a payload's body, its parsed lists) are mapped on their own and unmapped when freed:
    glibc would otherwise raise that threshold after the first large free and keep such blocks."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, arenas)
        libc.mallopt(_M_MMAP_THRESHOLD, 256 * 1024)
        libc.mallopt(_M_TRIM_THRESHOLD, 1024 * 1024)


def trim() -> None:
    """Return the heap's free memory to the system (what a storm's payloads left behind)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
