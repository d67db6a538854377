"""The host allocator under the engine.

glibc hands memory that an arena frees back to the system as soon as the free space at the arena's
top passes a threshold (128 KiB, then adapted). A forward frees and allocates the same activation
buffers at every step, so they came back as fresh pages, faulted in again, every step; worst in the
engine's thread, whose arena is not the main one: the same one-token forward of the packaged model
(int8 weights, 2 CPU cores) took 81 ms in a thread against 58 ms on the main thread, and 52 ms in a
thread once the threshold was 1 GiB (docs/benchmark.md). So the engine's process keeps what its
largest step used, up to that much, instead of returning it between steps.
"""
import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)
M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter
KEEP_FREE_BYTES = 1 << 30


def keep_freed_memory():
    """Raise glibc's trim threshold for every arena (Linux); True if it did."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREE_BYTES))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): its allocator is left as it is
        log.info("the C library has no mallopt; freed memory goes back to the system between steps")
        return False
