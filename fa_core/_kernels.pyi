"""Type stubs for the compiled kernels (fa_core/_kernels.pyx)."""

from typing import Any, Callable

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]

CHECKED_BUILD: bool  # built with FA_CORE_CHECKED_BUILD=1 (bounds checks, sanitizers)

class KModel:
    """C view of a validated generative model; built by GenerativeModel only."""

    scratch_size: int
    sum_obs: int
    sum_controls: int
    lnC_size: int
    blocked: bool  # populations evaluate policies eight agents at a time
    s_off: npt.NDArray[np.intp]
    def __init__(
        self,
        ints: dict[str, Any],
        mats: list[dict[str, Any]],
        a_H: list[npt.ArrayLike],
        lnC: list[npt.ArrayLike],
        lnE: npt.ArrayLike,
        logD: npt.ArrayLike,
        I: tuple[npt.ArrayLike, npt.ArrayLike] | None,
        ii_depth: int,
    ) -> None: ...
    def with_changes(
        self,
        mats: dict[int, dict[str, Any]],
        a_H: dict[int, npt.ArrayLike],
    ) -> KModel: ...
    @property
    def nbytes(self) -> int: ...

def load_observation(model: KModel, observation: Any, out: I32) -> None: ...
def infer_states(
    model: KModel, qs: F32, qs_prev: F32, action: I32, has_action: int, obs: I32,
    obs_distr: F32, distr: bool, num_iter: int, dF: float, dF_tol: float,
    compute_vfe: bool, scratch: F32, prior: F32 | None = None,
) -> int: ...
def infer_policies(
    model: KModel, qs: F32, gamma: float, use_utility: bool, use_states_info_gain: bool,
    use_pA: bool, use_pB: bool, use_I: bool, G: F32, q_pi: F32, scratch: F32,
) -> None: ...
def action_marginals(model: KModel, q_pi: F32, marg: F32) -> None: ...
def predict_states(model: KModel, qs: F32, action: I32, out: F32, scratch: F32) -> None: ...
def tie_rtol(model: KModel, G: F32, gamma: float) -> float: ...
def select_highest(
    x: F32, sizes: I32, out: I32, rtol: float, randint: Callable[[int], int],
) -> None: ...
def population_stages(
    model: KModel, stages: int, qs: F32, q_pi: F32, G: F32, action: I32,
    has_action: npt.NDArray[np.uint8], obs: I32, gamma: F32, alpha: F32,
    lnC: F32 | None, lnE: F32 | None, rng: npt.NDArray[np.uint64], scratch: F32,
    num_iter: int, dF: float, dF_tol: float, compute_vfe: bool, use_utility: bool,
    use_states_info_gain: bool, use_pA: bool, use_pB: bool, use_I: bool, full: bool,
    deterministic: bool, n_threads: int, prior: F32 | None = None,
) -> None: ...
def dirichlet_add(
    counts: npt.NDArray[np.float64], a: npt.NDArray[np.float64], b: npt.NDArray[np.float64],
    lr: float, stride: int, offset: int,
) -> None: ...
def pack_counts(
    p: npt.NDArray[np.float64], indptr: I32 | None, idx: I32 | None, val: F32,
    logval: F32 | None, col_H: F32 | None, wval: F32 | None, work: npt.NDArray[np.float64],
) -> int: ...
