"""Host memory allocator settings for CPU training and inference (glibc ``malloc`` on Linux).

A training step at 128 x 128 with batches of 16 allocates and frees dozens of activation tensors of 5-35 MB every
step. glibc serves blocks above its mmap threshold (dynamic, at most 32 MB) with a fresh ``mmap`` and returns them to
the system on free, and it trims freed memory at the top of the heap; either way the next step's tensors land on
new pages, and the kernel zero-fills every 4 KiB page on first touch, which made the same operators' timings
erratic from one call to the next on this project's CPU (docs/training_log.md, "Training step").

:func:`reuse_freed_memory` tells glibc to serve every block from its heap (``M_MMAP_MAX`` 0) and never to trim it
(``M_TRIM_THRESHOLD`` the largest value), so freed blocks are reused without new page faults: the arithmetic is
unchanged (results are bit-identical), the process keeps its peak heap until it exits. This is what PyTorch's CPU
performance guides reach for jemalloc or tcmalloc for, without a preloaded library. It applies to the calling process
and the processes it forks afterwards (data-loader workers); elsewhere (not Linux, not glibc) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

__all__ = ["reuse_freed_memory"]

logger = logging.getLogger(__name__)

# mallopt(3) parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_NEVER_TRIM = 2**31 - 1  # mallopt takes an int: the largest value means "never trim"


def _glibc() -> ctypes.CDLL | None:
    """glibc's C library, or ``None`` where the process does not run on glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def reuse_freed_memory(enabled: bool = True) -> bool:
    """Keep freed heap memory for reuse (no ``mmap`` per large block, no trimming) in this process.

    Args:
        enabled: ``False`` does nothing (the config setting that turns it off).

    Returns:
        ``True`` when the settings were applied; ``False`` when disabled or not on glibc.
    """
    if not enabled:
        return False
    libc = _glibc()
    if libc is None:
        logger.info("reuse_freed_memory: not a glibc process; the allocator is left as it is")
        return False
    applied = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM) == 1
    if applied:
        logger.debug("glibc malloc: no mmap for large blocks, no heap trimming (freed memory is reused)")
    else:
        logger.warning("reuse_freed_memory: glibc refused mallopt; the allocator is left as it is")
    return applied
