"""Type stubs for action selection (fa_core/_selection.pyx)."""

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from fa_core._model import KModel

_F32 = npt.NDArray[np.float32]
_I32 = npt.NDArray[np.int32]

def tie_rtol(model: KModel, G: _F32, gamma: float) -> float: ...
def select_highest(
    x: _F32, sizes: _I32, out: _I32, rtol: float, randint: Callable[[int], int],
) -> None: ...
