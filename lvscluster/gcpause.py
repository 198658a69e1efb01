"""Pausing Python's cyclic garbage collector while a large, acyclic structure is built.

Building hundreds of thousands of objects that hold no reference cycles (a parsed topology,
desired node states, dumped IPVS dests) makes the collector rescan the whole growing heap
again and again; reference counting frees them all the same.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Run the block with the cyclic collector off (it is turned back on only if it was on)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
