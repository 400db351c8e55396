"""Type stubs for the state inference kernels (fa_core/_states.pyx)."""

import numpy as np
import numpy.typing as npt

from fa_core._model import KModel

F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]

def infer_states(
    model: KModel, qs: F32, qs_prev: F32, action: I32, has_action: int, obs: I32,
    obs_distr: F32, distr: bool, num_iter: int, dF: float, dF_tol: float,
    compute_vfe: bool, scratch: F32,
) -> int: ...
def predict_states(model: KModel, qs: F32, action: I32, out: F32, scratch: F32) -> None: ...
