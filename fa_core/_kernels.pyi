"""Type stubs for the population driver and the re-exported entry points (fa_core/_kernels.pyx)."""

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]

from fa_core._model import KModel as KModel, load_observation as load_observation
from fa_core._policies import action_marginals as action_marginals, infer_policies as infer_policies
from fa_core._selection import select_highest as select_highest, tie_rtol as tie_rtol
from fa_core._states import infer_states as infer_states, predict_states as predict_states

CHECKED_BUILD: bool  # built with FA_CORE_CHECKED_BUILD=1 (bounds checks, sanitizers)

def population_stages(
    model: KModel, stages: int, qs: F32, q_pi: F32, G: F32, action: I32,
    has_action: npt.NDArray[np.uint8], obs: I32, gamma: F32, alpha: F32,
    lnC: F32 | None, lnE: F32 | None, rng: npt.NDArray[np.uint64], scratch: F32,
    num_iter: int, dF: float, dF_tol: float, compute_vfe: bool, use_utility: bool,
    use_states_info_gain: bool, use_pA: bool, use_pB: bool, use_I: bool, full: bool,
    deterministic: bool, n_threads: int,
    models: npt.NDArray[np.uintp] | None = None,
    replan: npt.NDArray[np.uint8] | None = None,
    shift: tuple[I32, I32, F32, int] | None = None,
) -> None: ...
