"""Per-thread scratch memory for the kernels and the facade.

A step needs temporary space (log likelihoods, joint states, predicted
beliefs, the observation being read, action marginals) that no agent has to
keep between calls. One buffer per use and per thread, grown to the largest
model seen, serves every agent on that thread, so an idle agent owns none of
it. Buffers are numpy arrays, so tracemalloc and other memory tools see them.
"""

from __future__ import annotations

import threading

import numpy as np

_local = threading.local()


def scratch(n: int, slot: str = "kernel", dtype=np.float32) -> np.ndarray:
    """A buffer of at least ``n`` elements for ``slot``, owned by the calling thread.

    The same buffer is returned for the same slot on every call from one
    thread; its contents are undefined on entry. Callers must not keep it
    across calls. Distinct slots never overlap, so one call may use several.
    """
    bufs = getattr(_local, "bufs", None)
    if bufs is None:
        bufs = _local.bufs = {}
    buf = bufs.get(slot)
    if buf is None or buf.shape[0] < n:
        buf = bufs[slot] = np.zeros(max(n, 64), dtype=dtype)
    return buf


def scratch_nbytes() -> int:
    """Bytes of scratch held by the calling thread."""
    return sum(b.nbytes for b in getattr(_local, "bufs", {}).values())
