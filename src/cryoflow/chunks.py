"""One way to walk through work in pieces: consecutive slices of at most ``size`` items (standard library only)."""

from __future__ import annotations

from collections.abc import Iterator


def chunks(total: int, size: int) -> Iterator[slice]:
    """Slices ``[start, stop)`` covering ``range(total)`` in order, each of at most ``size`` items; ``stop``
    never passes ``total``, so ``part.stop - part.start`` is a chunk's length."""
    if size < 1:
        raise ValueError(f"chunk size {size} must be at least 1")
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))
