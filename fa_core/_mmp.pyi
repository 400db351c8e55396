"""Type stubs for the compiled marginal-message-passing kernels (fa_core/_mmp.pyx)."""

from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]

class MMPModel:
    """C view of the dense float32 arrays MMP reads; built by fa_core.mmp only."""

    n_fs: int
    n_ds: int
    def __init__(self, d: dict[str, Any]) -> None: ...
    @property
    def nbytes(self) -> int: ...

def infer_states(model: MMPModel, lh: F32, past_len: int, infer_len: int, future_cutoff: int,
                 acts: I32, prior: F32, q: F32, F: F32, num_iter: int, tau: float, fut_w: float,
                 fs: F32, ds: F64, lnlh: F64, xn: F32 | None = ...,
                 vn: F32 | None = ...) -> None: ...
def infer_policies(model: MMPModel, q: F32, t0: int, use_utility: bool,
                   use_states_info_gain: bool, F: F32, lnE: F32, gamma: float, G: F32,
                   q_pi: F32, fs: F32, ds: F64) -> None: ...
