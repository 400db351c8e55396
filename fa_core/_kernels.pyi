"""Type stubs for the population driver and the re-exported entry points (fa_core/_kernels.pyx)."""

import numpy as np
import numpy.typing as npt

from fa_core._model import KModel as KModel, load_observation as load_observation
from fa_core._policies import action_marginals as action_marginals, infer_policies as infer_policies
from fa_core._selection import select_highest as select_highest, tie_rtol as tie_rtol
from fa_core._states import infer_states as infer_states, predict_states as predict_states

__all__ = ["CHECKED_BUILD", "KModel", "action_marginals", "infer_policies", "infer_states",
           "load_observation", "population_stages", "predict_states", "select_highest",
           "simd_isa", "tie_rtol"]

_F32 = npt.NDArray[np.float32]
_I32 = npt.NDArray[np.int32]

CHECKED_BUILD: bool  # built with FA_CORE_CHECKED_BUILD=1 (bounds checks, sanitizers)

def simd_isa() -> str: ...

def population_stages(
    model: KModel, stages: int, qs: _F32, q_pi: _F32, G: _F32, action: _I32,
    has_action: npt.NDArray[np.uint8], obs: _I32, gamma: _F32, alpha: _F32,
    lnC: _F32 | None, lnE: _F32 | None, rng: npt.NDArray[np.uint64], scratch: _F32,
    num_iter: int, dF: float, dF_tol: float, compute_vfe: bool, use_utility: bool,
    use_states_info_gain: bool, use_pA: bool, use_pB: bool, use_I: bool, full: bool,
    deterministic: bool, n_threads: int,
    models: npt.NDArray[np.uintp] | None = None,
    replan: npt.NDArray[np.uint8] | None = None,
    shift: tuple[_I32, _I32, _F32, int] | None = None,
    prior: _F32 | None = None,
) -> None: ...
