"""How Python's cyclic garbage collector behaves during a run.

A run allocates a few container objects per model call (requests, responses, futures, pydantic
models) and keeps tens of thousands of them alive at once (samples and calls in flight). With
Python's default threshold (a generation-0 collection every 700 allocations) the collector ran
about 1,500 times in 20,000 calls and its full collections walked every module imported at start:
measured by ``bench/throughput.py`` on 2 cores, collections took 1.7 s of a 17.8 s run and, since
they stop the event loop, answers that had arrived waited behind them. Collecting every
``threshold`` allocations instead, with the start-up heap frozen out of the collector's view, cut
client CPU per call by about a quarter and brought the run from 0.88 to 0.93 of its physical limit
(docs/llms.md).

Reference counting still frees everything that is not part of a cycle at once; only cyclic
garbage waits longer, and a run makes little of it, so memory is not affected measurably
(``bench/million.py`` watches peak memory).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

#: The generation-0 threshold a run uses unless ``engine.gc_threshold`` says otherwise.
DEFAULT_THRESHOLD = 50_000


@contextmanager
def run_gc(threshold: int | None = DEFAULT_THRESHOLD) -> Iterator[None]:
    """Within the block, collect generation 0 every ``threshold`` allocations and leave the
    objects that exist on entry (modules, plugins, configuration) out of collections.

    ``None`` or ``0`` leaves the collector exactly as it is. On exit the previous thresholds are
    restored and the frozen objects are handed back to the collector. Blocks may nest (a Ray
    worker inside a test): the innermost restores what the outer one set.
    """
    if not threshold:
        yield
        return
    previous = gc.get_threshold()
    # freeze() moves every tracked object to a permanent generation that collections skip: the
    # imports and the pipeline's components live for the whole run, so walking them on each full
    # collection was pure cost.
    gc.freeze()
    gc.set_threshold(threshold, previous[1], previous[2])
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()
