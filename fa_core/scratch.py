"""Per-thread scratch memory for the kernels.

A step needs temporary space (log likelihoods, joint states, predicted
beliefs) that no agent has to keep between steps. One float32 buffer per
thread, grown to the largest model seen, serves every agent on that thread,
so an idle agent owns none of it. It is a numpy array, so tracemalloc and
other memory tools see it.
"""

from __future__ import annotations

import threading

import numpy as np

_local = threading.local()


def scratch(n: int) -> np.ndarray:
    """A float32 buffer of at least ``n`` elements, owned by the calling thread.

    The same buffer is returned on every call from one thread; its contents
    are undefined on entry. Callers must not keep it across calls.
    """
    buf = getattr(_local, "buf", None)
    if buf is None or buf.shape[0] < n:
        buf = np.empty(max(n, 1024), dtype=np.float32)
        _local.buf = buf
    return buf


def scratch_nbytes() -> int:
    """Bytes of scratch held by the calling thread."""
    buf = getattr(_local, "buf", None)
    return 0 if buf is None else buf.nbytes
