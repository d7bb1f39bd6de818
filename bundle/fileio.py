"""Atomic file writes, with no dependency beyond the standard library (so every environment of the bundle, the
MONAI Label one included, can import it)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path"]


@contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path with ``final``'s suffix in ``final``'s folder; on success rename it to ``final``
    (an atomic replace on POSIX and Windows), on failure remove it."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if final.name.endswith(".nii.gz") else final.suffix
    tmp = final.with_name(f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
