"""Type stubs for the compiled sophisticated-inference search (fa_core/_sophisticated.pyx)."""

from typing import Any

import numpy as np
import numpy.typing as npt
from typing_extensions import disjoint_base

@disjoint_base  # a cdef class: its C layout cannot be combined with another's
class SIModel:
    """Dense float32 copy of a model with one-step policies; built by fa_core.sophisticated."""

    num_states_total: int
    def __init__(
        self,
        num_states: list[int],
        num_obs: list[int],
        A_factor_list: list[list[int]],
        B_factor_list: list[list[int]],
        A: list[npt.ArrayLike],
        a_H: list[npt.ArrayLike],
        B: list[npt.ArrayLike],
        lnC: list[npt.ArrayLike],
        I: list[npt.ArrayLike] | None,
        policies: Any,
    ) -> None: ...
    def scratch_sizes(self, horizon: int) -> tuple[int, int]: ...
    @property
    def c_address(self) -> int: ...
    @property
    def nbytes(self) -> int: ...

def search(
    model: SIModel,
    qs: npt.NDArray[np.float64],
    horizon: int,
    policy_prune_threshold: float,
    state_prune_threshold: float,
    prune_penalty: float,
    gamma: float,
    num_iter: int,
    dF: float,
    dF_tol: float,
    compute_vfe: bool,
    dbl_scratch: npt.NDArray[np.float64],
    int_scratch: npt.NDArray[np.int32],
    G: npt.NDArray[np.float32],
    q_pi: npt.NDArray[np.float32],
) -> None: ...

def tie_rtol(G: npt.NDArray[np.float32], q_pi: npt.NDArray[np.float32]) -> float: ...
def population_scratch_sizes(
    model: SIModel, kmodel: Any, horizon: int
) -> tuple[int, int, int]: ...
def population_stages(
    model: SIModel,
    kmodel: Any,
    stages: int,
    qs: npt.NDArray[np.float32],
    q_pi: npt.NDArray[np.float32],
    G: npt.NDArray[np.float32],
    action: npt.NDArray[np.int32],
    has_action: npt.NDArray[np.uint8],
    alpha: npt.NDArray[np.float32],
    rng: npt.NDArray[np.uint64],
    replan: npt.NDArray[np.uint8] | None,
    horizon: int,
    policy_prune_threshold: float,
    state_prune_threshold: float,
    prune_penalty: float,
    num_iter: int,
    dF: float,
    dF_tol: float,
    compute_vfe: bool,
    full: bool,
    deterministic: bool,
    dbl: npt.NDArray[np.float64],
    ints: npt.NDArray[np.int32],
    flt: npt.NDArray[np.float32],
    n_threads: int,
    models: npt.NDArray[np.uintp] | None = None,
) -> None: ...
