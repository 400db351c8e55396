"""Type stubs for the policy evaluation kernels (fa_core/_policies.pyx)."""

import numpy as np
import numpy.typing as npt

from fa_core._model import KModel

_F32 = npt.NDArray[np.float32]
_I32 = npt.NDArray[np.int32]

def infer_policies(
    model: KModel, qs: _F32, gamma: float, use_utility: bool, use_states_info_gain: bool,
    use_pA: bool, use_pB: bool, use_I: bool, G: _F32, q_pi: _F32, scratch: _F32,
) -> None: ...
def action_marginals(model: KModel, q_pi: _F32, marg: _F32) -> None: ...
def sparse_beliefs(enabled: bool | None = None) -> tuple[bool, int]: ...
