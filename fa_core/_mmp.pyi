"""Type stubs for the compiled marginal-message-passing kernels (fa_core/_mmp.pyx)."""

from typing import Any

import numpy as np
import numpy.typing as npt
from typing_extensions import disjoint_base

_F32 = npt.NDArray[np.float32]
_F64 = npt.NDArray[np.float64]
_I32 = npt.NDArray[np.int32]

@disjoint_base  # a cdef class: its C layout cannot be combined with another's
class MMPModel:
    """C view of the dense float32 arrays MMP reads; built by fa_core.mmp only."""

    n_fs: int
    n_ds: int
    def __init__(self, d: dict[str, Any]) -> None: ...
    @property
    def nbytes(self) -> int: ...

def infer_states(model: MMPModel, lh: _F32, past_len: int, infer_len: int, future_cutoff: int,
                 acts: _I32, prior: _F32, q: _F32, F: _F32, num_iter: int, tau: float, fut_w: float,
                 fs: _F32, ds: _F64, lnlh: _F64, xn: _F32 | None = ...,
                 vn: _F32 | None = ...) -> None: ...
def infer_policies(model: MMPModel, q: _F32, t0: int, use_utility: bool,
                   use_states_info_gain: bool, F: _F32, lnE: _F32, gamma: float, G: _F32,
                   q_pi: _F32, fs: _F32, ds: _F64) -> None: ...

# population drivers: the per-agent kernels over every agent of a population (OpenMP)
_I64 = npt.NDArray[np.int64]
_U8 = npt.NDArray[np.uint8]

def population_scratch_widths(model: MMPModel, horizon: int, policy_len: int,
                              n_pol: int) -> tuple[int, int, int]: ...
def population_infer_states(model: MMPModel, pol: _I32, horizon: int, obs: _I32, lh: _F32,
                            q: _F32, F: _F32, prior: _F32, head: _I32, tail: _I32, nobs: _I64,
                            nact: _I64, fresh: _U8, qs: _F32, q_pi: _F32, num_iter: int,
                            tau: float, fut_w: float, fs: _F32, ds: _F64, ints: _I32,
                            n_threads: int) -> None: ...
def population_infer_policies(model: MMPModel, pol: _I32, horizon: int, q: _F32, F: _F32,
                              nobs: _I64, lnE: _F32, shared_E: bool, gamma: _F32,
                              use_utility: bool, use_states_info_gain: bool, G: _F32,
                              q_pi: _F32, qs: _F32, fs: _F32, ds: _F64, ints: _I32,
                              n_threads: int) -> None: ...
def population_step_time(model: MMPModel, pol: _I32, horizon: int, actions: _I32,
                         curr_timestep: _I64, head: _I32, tail: _I32, nact: _I64, q: _F32,
                         q_pi: _F32, fresh: _U8, prior: _F32, n_threads: int) -> None: ...
