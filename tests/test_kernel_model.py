"""The typed model-to-kernel contract: KernelLayout, MatSpec and KModel's constructor.

GenerativeModel hands the compiled code a KernelLayout (integer tables) and MatSpec
matrices, never string-keyed dicts; bad pieces are refused with a message naming them.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from fa_core import GenerativeModel, _kernels, builtin_models
from fa_core._model import KernelLayout, KModel, MatSpec
from random_models import random_model


def _gm(seed=0, **kw):
    rng = np.random.default_rng(seed)
    d = random_model(rng, (3, 2), (3, 2), (2, 2), sparsity=0.4, C_scale=2.0)
    return GenerativeModel(A=d["A"], B=d["B"], C=d["C"], D=d["D"], **kw)


def _policy_numbers(gm, kmodel):
    qs = np.concatenate([np.full(n, 1.0 / n, np.float32) for n in gm.num_states])
    G = np.empty(gm.num_policies, np.float32)
    q_pi = np.empty(gm.num_policies, np.float32)
    scratch = np.empty(kmodel.scratch_size, np.float32)
    _kernels.infer_policies(kmodel, qs, 16.0, True, True, False, False, False, G, q_pi, scratch)
    return G, q_pi


def _rebuilt(gm):
    """A KModel built again from the model's typed pieces, as GenerativeModel._pack does."""
    mats = []
    for spec in gm._A_specs:
        mats.append(spec)
    for specs in gm._B_specs:
        mats.extend(specs)
    I_values, I_off = gm._packed_I()
    return KModel(gm.kmodel.layout, mats, a_H=gm._a_H, lnC=gm._lnC, lnE=gm._lnE,
                  logD=gm._logD, I_values=I_values, I_off=I_off, ii_depth=gm.ii_depth)


@pytest.mark.parametrize("sparse", [True, False])
def test_model_hands_typed_pieces_to_the_kernels(sparse):
    gm = _gm(sparse=sparse)
    lay = gm.kmodel.layout
    assert isinstance(lay, KernelLayout) and lay is gm._kernel_layout
    assert all(isinstance(s, MatSpec) for s in gm._A_specs)
    assert all(isinstance(s, MatSpec) for specs in gm._B_specs for s in specs)
    assert lay.ns.dtype == np.int32 and not lay.ns.flags.writeable
    assert list(lay.ns) == gm.num_states and list(lay.no) == gm.num_obs
    assert lay.policies.shape == (gm.num_policies, gm.policy_len, gm.num_factors)
    km = _rebuilt(gm)
    assert km.scratch_size == gm.kmodel.scratch_size and km.blocked == gm.kmodel.blocked
    for x, y in zip(_policy_numbers(gm, km), _policy_numbers(gm, gm.kmodel)):
        np.testing.assert_array_equal(x, y)


def test_matspec_checks_its_arrays():
    val = np.ones(6, np.float32) / 2
    spec = MatSpec(2, 3, val)
    assert not spec.sparse and spec.val is val and spec.nbytes == val.nbytes
    with pytest.raises(TypeError, match="val must be a 1-D C-contiguous float32"):
        MatSpec(2, 3, np.ones(6))
    with pytest.raises(TypeError, match="val must be"):
        MatSpec(2, 3, np.ones(12, np.float32)[::2])
    with pytest.raises(ValueError, match="must hold 6 values"):
        MatSpec(2, 3, np.ones(5, np.float32))
    with pytest.raises(ValueError, match="together"):
        MatSpec(2, 3, val, indptr=np.zeros(4, np.int32))
    with pytest.raises(ValueError, match="indptr must hold cols"):
        MatSpec(2, 3, np.ones(3, np.float32), indptr=np.zeros(3, np.int32),
                idx=np.zeros(3, np.int32))
    with pytest.raises(TypeError, match="idx must be"):
        MatSpec(2, 3, np.ones(3, np.float32), indptr=np.arange(4, dtype=np.int32),
                idx=np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="onehot"):
        MatSpec(2, 3, val, onehot=True)
    with pytest.raises(ValueError, match="logval must hold"):
        MatSpec(2, 3, val, logval=np.zeros(5, np.float32))
    # a sparse spec with new values keeps its pattern arrays (learning shares them)
    sp = MatSpec(2, 3, np.ones(3, np.float32), indptr=np.arange(4, dtype=np.int32),
                 idx=np.array([0, 1, 0], np.int32), onehot=True)
    new = sp.with_values(np.full(3, 0.5, np.float32))
    assert new.indptr is sp.indptr and new.idx is sp.idx and new.onehot
    assert pickle.loads(pickle.dumps(sp)).idx.tolist() == [0, 1, 0]


def test_layout_and_kmodel_refuse_inconsistent_pieces():
    gm = builtin_models.tmaze()
    model = GenerativeModel(**gm)
    lay = model.kmodel.layout
    fields = {name: getattr(lay, name) for name in (
        "ns", "no", "nc", "s_off", "nc_off", "a_dep", "a_dep_off", "a_K", "a_mat", "wa_mat",
        "a_group", "a_group_first", "g_dep", "g_dep_off", "g_dep_vfe", "g_K", "g_off",
        "a_ntail", "a_Khead", "a_red_off", "red_stride", "b_dep", "b_dep_off", "b_K",
        "b_mat", "wb_mat", "policies")}
    assert KernelLayout(**fields).a_mat.tolist() == lay.a_mat.tolist()
    with pytest.raises(ValueError, match="a_mat must hold 3 values"):
        KernelLayout(**dict(fields, a_mat=[0, 1]))
    with pytest.raises(ValueError, match="policies must have 3 axis"):
        KernelLayout(**dict(fields, policies=np.zeros((4, 2), np.int32)))
    with pytest.raises(TypeError):
        KernelLayout(**{k: v for k, v in fields.items() if k != "g_K"})
    mats = list(model._A_specs) + [s for specs in model._B_specs for s in specs]
    kw = dict(a_H=model._a_H, lnC=model._lnC, lnE=model._lnE, logD=model._logD)
    with pytest.raises(ValueError, match="outside the 7 given"):
        KModel(lay, mats[:-1], **kw)
    with pytest.raises(TypeError):
        KModel(lay, mats[:-1] + [{"rows": 2}], **kw)
    with pytest.raises(TypeError):
        KModel(dict(fields), mats, **kw)
    with pytest.raises(ValueError, match="one entry per modality"):
        KModel(lay, mats, **dict(kw, a_H=model._a_H[:-1]))


def test_content_key_sees_matrix_values():
    """Packed matrices are typed objects now: the key still digests their values."""
    d = dict(builtin_models.tmaze())
    A = np.empty(len(d["A"]), dtype=object)
    for m, a in enumerate(d["A"]):
        A[m] = np.array(a)
    A[2] = A[2][::-1].copy()  # same shape and sparsity, other values
    assert GenerativeModel(**d).content_key() != GenerativeModel(**dict(d, A=A)).content_key()
    assert GenerativeModel(**d).content_key() == GenerativeModel(**d).content_key()
