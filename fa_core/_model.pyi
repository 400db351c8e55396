"""Type stubs for the typed compiled model (fa_core/_model.pyx)."""

from typing import Any

import numpy as np
import numpy.typing as npt
from typing_extensions import disjoint_base

_F32 = npt.NDArray[np.float32]
_I32 = npt.NDArray[np.int32]

@disjoint_base  # a cdef class: its C layout cannot be combined with another's
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
        logD: npt.ArrayLike | None = None,
    ) -> KModel: ...
    @property
    def table_nbytes(self) -> int: ...
    @property
    def _c_address(self) -> int: ...
    @property
    def nbytes(self) -> int: ...

def load_observation(model: KModel, observation: Any, out: _I32) -> None: ...
