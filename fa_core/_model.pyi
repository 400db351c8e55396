"""Type stubs for the typed compiled model (fa_core/_model.pyx)."""

from typing import Any

import numpy as np
import numpy.typing as npt
from typing_extensions import disjoint_base

_F32 = npt.NDArray[np.float32]
_I32 = npt.NDArray[np.int32]

@disjoint_base  # a cdef class: its C layout cannot be combined with another's
class MatSpec:
    """One kernel matrix, dense row-major or sparse CSC (arrays pointed into, not copied)."""

    rows: int
    cols: int
    sparse: bool
    onehot: bool
    val: _F32
    logval: _F32 | None
    indptr: _I32 | None
    idx: _I32 | None
    def __init__(
        self,
        rows: int,
        cols: int,
        val: _F32,
        *,
        logval: _F32 | None = None,
        indptr: _I32 | None = None,
        idx: _I32 | None = None,
        onehot: bool = False,
    ) -> None: ...
    def with_values(self, val: _F32, logval: _F32 | None = None) -> MatSpec: ...
    @property
    def nbytes(self) -> int: ...

@disjoint_base
class KernelLayout:
    """The integer tables of a model's kernel layout (read-only int32 arrays)."""

    ns: _I32
    no: _I32
    nc: _I32
    s_off: _I32
    nc_off: _I32
    a_dep: _I32
    a_dep_off: _I32
    a_K: _I32
    a_mat: _I32
    wa_mat: _I32
    a_group: _I32
    a_group_first: _I32
    g_dep: _I32
    g_dep_off: _I32
    g_dep_vfe: _I32
    g_K: _I32
    g_off: _I32
    a_ntail: _I32
    a_Khead: _I32
    a_red_off: _I32
    red_stride: int
    b_dep: _I32
    b_dep_off: _I32
    b_K: _I32
    b_mat: _I32
    wb_mat: _I32
    policies: _I32
    def __init__(
        self,
        *,
        ns: npt.ArrayLike,
        no: npt.ArrayLike,
        nc: npt.ArrayLike,
        s_off: npt.ArrayLike,
        nc_off: npt.ArrayLike,
        a_dep: npt.ArrayLike,
        a_dep_off: npt.ArrayLike,
        a_K: npt.ArrayLike,
        a_mat: npt.ArrayLike,
        wa_mat: npt.ArrayLike,
        a_group: npt.ArrayLike,
        a_group_first: npt.ArrayLike,
        g_dep: npt.ArrayLike,
        g_dep_off: npt.ArrayLike,
        g_dep_vfe: npt.ArrayLike,
        g_K: npt.ArrayLike,
        g_off: npt.ArrayLike,
        a_ntail: npt.ArrayLike,
        a_Khead: npt.ArrayLike,
        a_red_off: npt.ArrayLike,
        red_stride: int,
        b_dep: npt.ArrayLike,
        b_dep_off: npt.ArrayLike,
        b_K: npt.ArrayLike,
        b_mat: npt.ArrayLike,
        wb_mat: npt.ArrayLike,
        policies: npt.ArrayLike,
    ) -> None: ...

@disjoint_base
class KModel:
    """C view of a validated generative model; built by GenerativeModel only."""

    layout: KernelLayout
    scratch_size: int
    sum_obs: int
    sum_controls: int
    lnC_size: int
    blocked: bool  # populations evaluate policies eight agents at a time
    s_off: npt.NDArray[np.intp]
    def __init__(
        self,
        layout: KernelLayout,
        mats: list[MatSpec],
        *,
        a_H: list[npt.ArrayLike],
        lnC: list[npt.ArrayLike],
        lnE: npt.ArrayLike,
        logD: npt.ArrayLike,
        I_values: npt.ArrayLike | None = None,
        I_off: npt.ArrayLike | None = None,
        ii_depth: int = 0,
    ) -> None: ...
    def with_changes(
        self,
        mats: dict[int, MatSpec],
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
