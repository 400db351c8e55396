"""Type stubs for action selection (fa_core/_selection.pyx)."""

from typing import Callable

import numpy as np
import numpy.typing as npt

from fa_core._model import KModel

F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]

def tie_rtol(model: KModel, G: F32, gamma: float) -> float: ...
def select_highest(
    x: F32, sizes: I32, out: I32, rtol: float, randint: Callable[[int], int],
) -> None: ...
