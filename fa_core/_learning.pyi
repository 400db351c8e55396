"""Type stubs for the compiled Dirichlet learning kernels (fa_core/_learning.pyx)."""

from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]

def dirichlet_add(
    counts: F64, a: F64, b: F64, lr: float, stride: int, offset: int,
) -> None: ...
def pack_counts(
    p: F64, indptr: I32 | None, idx: I32 | None, val: F32,
    logval: F32 | None, col_H: F32 | None, wval: F32 | None, work: F64,
) -> int: ...
def population_learn(
    kind: int, mats: list[dict[str, Any]], qs: F32, qs_prev: F32 | None, obs: I32 | None,
    actions: I32 | None, lr: float, s_off: I32, ns: I32, scratch: F64, n_threads: int,
) -> None: ...
