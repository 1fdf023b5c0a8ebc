"""A second thread for the exact path's large row-wise kernels, within torch's thread budget.

The compiled kernels (kernels.py) release the GIL and write disjoint rows, so one call can
be split in two row ranges that run at once; the integers are the same whatever the split (each row
is computed alone). The budget is torch's (`torch.set_num_threads`, `pxzip --threads`): on one
torch thread (as `--jobs` workers run) nothing is split. No process-wide setting is changed, and
concurrent callers share the one helper thread (each waits only for its own half).

Only numba kernels run on the helper, never torch: a torch._int_mm there gives torch's OpenMP a
second thread team, and measured on two threads (kodim23, encode then decode in one process) the
next decode slowed from 12.7 to 16-17 s. So the decoders' GEMMs and the encoder's whole-tile
convolutions stay on the caller's thread (their own threads are torch's).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

MIN_ROWS = 256  # rows from which a split pays for the hand-over (~30 us; measured, session 14)

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _helper() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(1, thread_name_prefix="pxzip-rows")
        return _pool


def split_rows(n: int, fn: Callable[[int, int], object]) -> None:
    """fn(a, b) over rows [a, b) covering 0 .. n: two halves on two threads where n >= min_rows and
    torch may use more than one thread, else one call. fn must write only its own rows, and run
    compiled kernels only, no torch ops (module docstring)."""
    if n < MIN_ROWS or torch.get_num_threads() < 2:
        fn(0, n)
        return
    mid = n // 2
    other = _helper().submit(fn, mid, n)
    try:
        fn(0, mid)
    finally:
        other.result()
