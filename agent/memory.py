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

_M_ARENA_MAX = -8  # mallopt(3)


@functools.cache
def _libc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only: raises AttributeError elsewhere
        return libc
    except (OSError, AttributeError):
        return None


def limit_arenas(arenas: int = 2) -> None:
    """Call before threads start: later threads share `arenas` heaps instead of one each."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, arenas)


def trim() -> None:
    """Return the heap's free memory to the system (what a storm's payloads left behind)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
