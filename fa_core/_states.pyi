"""Type stubs for the state inference kernels (fa_core/_states.pyx)."""

import numpy as np
import numpy.typing as npt

from fa_core._model import KModel

_F32 = npt.NDArray[np.float32]
_I32 = npt.NDArray[np.int32]

def infer_states(
    model: KModel, qs: _F32, qs_prev: _F32, action: _I32, has_action: int, obs: _I32,
    obs_distr: _F32, distr: bool, num_iter: int, dF: float, dF_tol: float,
    compute_vfe: bool, scratch: _F32,
) -> int: ...
def predict_states(model: KModel, qs: _F32, action: _I32, out: _F32, scratch: _F32) -> None: ...
def sparse_states(enabled: bool | None = None) -> tuple[bool, int, int]: ...
