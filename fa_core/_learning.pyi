"""Type stubs for the compiled Dirichlet learning kernels (fa_core/_learning.pyx)."""

from typing import Any

import numpy as np
import numpy.typing as npt

_F32 = npt.NDArray[np.float32]
_F64 = npt.NDArray[np.float64]
_I32 = npt.NDArray[np.int32]

def dirichlet_add(
    counts: _F64, a: _F64, b: _F64, lr: float, stride: int, offset: int,
) -> None: ...
def pack_counts(
    p: _F64, indptr: _I32 | None, idx: _I32 | None, val: _F32,
    logval: _F32 | None, col_H: _F32 | None, wval: _F32 | None, work: _F64,
) -> int: ...
def population_learn(
    kind: int, mats: list[dict[str, Any]], qs: _F32, qs_prev: _F32 | None, obs: _I32 | None,
    actions: _I32 | None, lr: float, s_off: _I32, ns: _I32, scratch: _F64, n_threads: int,
    update: bool = ...,
) -> None: ...
