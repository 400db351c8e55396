"""Keyword validation shared by :class:`~fa_core.Agent`, :class:`~fa_core.Population`
and :class:`~fa_core.distributed.ShardedPopulation`.

Every option a kernel reads as an index, a size, a count, a loop bound or a
float32 number is checked here, once, where it enters from Python, with an
error that names it and its valid range. The functions return the value in
the form the caller stores (an ``int``, a ``float``, a dict), so a facade
validates everything first and only then assigns: a refused call changes
nothing.

Bounds (module constants, documented in the README):

``MAX_THREADS``
    Threads per :class:`~fa_core.Population` call. More than the cores
    available is allowed (OpenMP oversubscribes), more than this is refused.
``MAX_NUM_ITER``
    Fixed-point iterations of state inference per call.
``MAX_II_DEPTH``
    Depth of inductive inference (``ii_depth``): the reachability matrices
    have ``ii_depth * num_states[f]`` entries per factor.
``MAX_PRECISION``
    Largest ``|gamma|`` / ``|alpha|``: beyond it ``gamma * G`` overflows
    float32 and the policy posterior turns into NaN.
``FLOAT32_MAX``
    Largest magnitude of any real-valued input (distributions, ``C``,
    ``E``, counts, learning rates): larger finite values turn into
    infinity, then NaN, in the float32 kernels.
"""

from __future__ import annotations

import math
import operator
from typing import Any
from collections.abc import Iterable, Sequence

import numpy as np

MAX_THREADS = 1024
MAX_NUM_ITER = 100_000
MAX_II_DEPTH = 10_000
MAX_PRECISION = 1e30
FLOAT32_MAX = float(np.finfo(np.float32).max)

#: State inference options of ``inference_algo="VANILLA"`` and their defaults (pymdp's).
VANILLA_DEFAULTS = {"num_iter": 10, "dF": 1.0, "dF_tol": 0.001, "compute_vfe": True}

class OptionTypeError(TypeError, ValueError):
    """An option of the wrong type (``policy_len=2.5``, ``n_threads="2"``).

    Both a TypeError and a ValueError, as ``numpy.AxisError`` is both an
    IndexError and a ValueError: code that caught the ValueError earlier
    versions raised for some of these keeps working.
    """


_BOOL_TYPES = (bool, np.bool_)
_INT_TYPES = (int, np.integer)
_REAL_TYPES = (int, float, np.integer, np.floating)


def _range_text(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f"in {lo}..{hi}"
    if lo is not None:
        return f">= {lo}"
    if hi is not None:
        return f"<= {hi}"
    return "any integer"


def check_int(name: str, v: Any, lo: int | None = None, hi: int | None = None) -> int:
    """``v`` as an ``int`` in ``lo..hi`` (inclusive), or a TypeError / ValueError naming ``name``.

    Booleans, floats (even integral ones) and strings are refused.
    """
    if isinstance(v, _BOOL_TYPES) or not isinstance(v, _INT_TYPES):
        raise OptionTypeError(f"{name} must be an integer {_range_text(lo, hi)}, "
                        f"got {type(v).__name__} {v!r}")
    v = int(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(f"{name} must be an integer {_range_text(lo, hi)}, got {v}")
    return v


def seed_sequence(seed: Any, name: str = "seed") -> np.random.SeedSequence:
    """The :class:`numpy.random.SeedSequence` a population draws its agents' streams from.

    One convention for :class:`~fa_core.Population` and
    :class:`~fa_core.distributed.ShardedPopulation` (:class:`~fa_core.Agent` takes the same
    kinds of seed and passes them to :func:`numpy.random.default_rng`).

    Parameters
    ----------
    seed : None, int, sequence of int, numpy.random.SeedSequence or numpy.random.Generator
        ``None``: fresh entropy from the operating system. An int (or a sequence of
        ints), non-negative: that entropy, so the same seed gives the same agents. A
        ``SeedSequence``: used as it is. A ``Generator``: 128 bits drawn from it become the
        entropy, so a seeded generator gives a reproducible population (and advances).
    name : str
        The argument's name in error messages.

    Returns
    -------
    numpy.random.SeedSequence

    Raises
    ------
    OptionTypeError
        A seed of another type (a float, a bool, a string, ...).
    ValueError
        A negative integer.

    Examples
    --------
    >>> seed_sequence(0).entropy
    0
    >>> g = np.random.default_rng(0)
    >>> seed_sequence(g).entropy == seed_sequence(np.random.default_rng(0)).entropy
    True
    """
    if seed is None:
        return np.random.SeedSequence()
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, np.random.Generator):
        return np.random.SeedSequence(int.from_bytes(seed.bytes(16), "little"))
    if isinstance(seed, _BOOL_TYPES):
        raise OptionTypeError(f"{name} must be an int, a SeedSequence or a Generator, got bool")
    if isinstance(seed, _INT_TYPES):
        if seed < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {seed}")
        return np.random.SeedSequence(int(seed))
    if isinstance(seed, (list, tuple, np.ndarray)) and len(seed) > 0 and all(
            isinstance(v, _INT_TYPES) and not isinstance(v, _BOOL_TYPES) and v >= 0
            for v in np.asarray(seed, dtype=object).ravel()):
        return np.random.SeedSequence([int(v) for v in np.asarray(seed, dtype=object).ravel()])
    raise OptionTypeError(f"{name} must be None, a non-negative int (or a sequence of them), "
                          f"a numpy SeedSequence or a numpy Generator, got "
                          f"{type(seed).__name__} {seed!r}")


def check_bool(name: str, v: Any) -> bool:
    """``v`` as a ``bool``: True / False (or numpy booleans, or the integers 0 and 1)."""
    if isinstance(v, _BOOL_TYPES) or (isinstance(v, _INT_TYPES) and v in (0, 1)):
        return bool(v)
    raise OptionTypeError(f"{name} must be True or False, got {type(v).__name__} {v!r}")


def check_float(name: str, v: Any, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False) -> float:
    """``v`` as a finite ``float`` within float32 range and ``lo..hi``.

    ``lo_open`` makes the lower bound exclusive (``> lo``).
    """
    if isinstance(v, _BOOL_TYPES) or not isinstance(v, _REAL_TYPES):
        raise OptionTypeError(f"{name} must be a real number, got {type(v).__name__} {v!r}")
    v = float(v)
    if not math.isfinite(v) or abs(v) > FLOAT32_MAX:
        raise ValueError(f"{name} must be finite and at most {FLOAT32_MAX:.4g} in magnitude "
                         f"(float32), got {v!r}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo:g}, got {v!r}")
    if hi is not None and v > hi:
        raise ValueError(f"{name} must be <= {hi:g}, got {v!r}")
    return v


def check_precision(name: str, v: Any) -> float:
    """A policy / action precision (``gamma``, ``alpha``): finite, ``|v| <= MAX_PRECISION``."""
    return check_float(name, v, lo=-MAX_PRECISION, hi=MAX_PRECISION)


def check_finite_float32(name: str, arr: np.ndarray) -> None:
    """Every entry of the real array ``arr`` is finite and within float32 range.

    One vectorised pass; the message names ``name`` and the first bad entry.
    """
    a = np.asarray(arr)
    if a.dtype.kind in "iub":
        if a.size and a.dtype.itemsize >= 8 and np.abs(a).max() > FLOAT32_MAX:
            raise ValueError(f"{name} has entries beyond float32 range")
        return
    ok = np.isfinite(a) & (np.abs(a) <= FLOAT32_MAX) if a.size else np.ones(0, bool)
    if not ok.all():
        where = tuple(int(i) for i in np.argwhere(~ok)[0])
        v = a[where]
        what = "NaN or infinite" if not np.isfinite(v) else "beyond float32 range"
        raise ValueError(f"{name} contains {what} values (e.g. {v!r} at index {where}); "
                         f"values must be finite and at most {FLOAT32_MAX:.4g} in magnitude")


def check_precisions(name: str, x: Any, n: int) -> np.ndarray:
    """Per-agent ``gamma`` / ``alpha``: a number or an ``(n,)`` array, as float32."""
    if isinstance(x, _BOOL_TYPES):
        raise OptionTypeError(f"{name} must be a number or an array of shape ({n},), got a bool")
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise OptionTypeError(f"{name} must be real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise ValueError(f"{name} must be a number or an array of shape ({n},), got {arr.shape}")
    check_finite_float32(name, arr)
    if arr.size and np.abs(arr).max() > MAX_PRECISION:
        raise ValueError(f"{name} must be at most {MAX_PRECISION:g} in magnitude (beyond it "
                         f"float32 overflows), got {np.abs(arr).max():g}")
    return arr.astype(np.float32)


def check_choice(name: str, v: Any, choices: Sequence) -> Any:
    """``v`` is one of ``choices``."""
    if not any(v is c or (type(v) is type(c) and v == c) for c in choices):
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, "
                         f"got {v!r}")
    return v


ACTION_SELECTIONS = ("deterministic", "stochastic")
SAMPLING_MODES = ("marginal", "full")


def _choice_check(name: str, choices: Sequence):
    return lambda v: check_choice(name, v, choices)


def _bool_check(name: str):
    return lambda v: check_bool(name, v)


def _rate_check(name: str):
    return lambda v: check_float(name, v, lo=0.0)


def check_hist_len(name: str, v: Any) -> int | None:
    """A history length: ``None`` (unbounded, as pymdp) or an integer >= 1."""
    if v is None:
        return None
    return check_int(name, v, 1, None)


def check_threads(v: Any, default: int | None = None) -> int:
    """A thread count: an integer in ``1..MAX_THREADS`` (``None``: ``default``)."""
    if v is None and default is not None:
        return min(max(int(default), 1), MAX_THREADS)
    return check_int("n_threads", v, 1, MAX_THREADS)


def check_index_list(name: str, v: Any, n: int) -> list[int]:
    """A list of distinct integers in ``0..n-1`` (a factor or modality list)."""
    if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple, np.ndarray, range)):
        raise OptionTypeError(f"{name} must be a list of integers in 0..{n - 1}, "
                        f"got {type(v).__name__} {v!r}")
    items = v.tolist() if isinstance(v, np.ndarray) else list(v)
    out = [check_int(f"{name}[{i}]", f, 0, n - 1) for i, f in enumerate(items)]
    if len(set(out)) != len(out):
        raise ValueError(f"{name} = {out} repeats an index")
    return out


def check_count_list(name: str, v: Any, n: int | None = None) -> list[int]:
    """A list of positive integers (one per factor, e.g. ``num_controls``)."""
    if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple, np.ndarray)):
        raise OptionTypeError(f"{name} must be a list of positive integers (one per factor), "
                        f"got {type(v).__name__} {v!r}")
    items = v.tolist() if isinstance(v, np.ndarray) else list(v)
    out = [check_int(f"{name}[{i}]", x, 1, None) for i, x in enumerate(items)]
    if n is not None and len(out) != n:
        raise ValueError(f"{name} must have one entry per factor ({n}), got {len(out)}")
    return out


def check_inference_params(inference_params: Any) -> dict:
    """VANILLA state-inference options: pymdp's defaults updated with ``inference_params``.

    ``num_iter`` an integer in ``1..MAX_NUM_ITER``, ``dF`` finite, ``dF_tol``
    finite and >= 0, ``compute_vfe`` a bool.
    """
    params = dict(VANILLA_DEFAULTS)
    if inference_params is None:
        return params
    if not isinstance(inference_params, dict):
        raise OptionTypeError(f"inference_params must be a dict, "
                              f"got {type(inference_params).__name__}")
    unknown = set(inference_params) - set(params)
    if unknown:
        raise ValueError(f"inference_params has unknown keys {sorted(map(str, unknown))}; "
                         f"VANILLA takes {sorted(params)}")
    params.update(inference_params)
    params["num_iter"] = check_int("inference_params['num_iter']", params["num_iter"], 1,
                                   MAX_NUM_ITER)
    params["dF"] = check_float("inference_params['dF']", params["dF"])
    params["dF_tol"] = check_float("inference_params['dF_tol']", params["dF_tol"], lo=0.0)
    params["compute_vfe"] = check_bool("inference_params['compute_vfe']", params["compute_vfe"])
    return params


def fpi_args(params: dict) -> tuple[int, float, float, bool]:
    """The kernel's ``(num_iter, dF, dF_tol, compute_vfe)`` from checked params."""
    return (int(params["num_iter"]), float(params["dF"]), float(params["dF_tol"]),
            bool(params["compute_vfe"]))


def check_beliefs(name: str, value: Any, num_states: Sequence[int]) -> list[np.ndarray]:
    """Per-factor beliefs: one non-negative vector per factor, of length
    ``num_states[f]``, summing to 1 (to float32 rounding); float64 vectors.
    """
    from fa_core.model import as_array_list  # model imports this module
    vecs = as_array_list(value, name)
    if len(vecs) != len(num_states) or any(v.shape != (n,) for v, n in zip(vecs, num_states)):
        raise ValueError(f"{name} must hold one vector per factor with lengths "
                         f"{list(num_states)}; got shapes {[v.shape for v in vecs]}")
    for f, v in enumerate(vecs):
        if np.any(v < 0):
            raise ValueError(f"{name}[{f}] has negative entries; beliefs must be >= 0")
        s = float(v.sum())
        if not abs(s - 1.0) <= BELIEF_ATOL:
            raise ValueError(f"{name}[{f}] sums to {s:.6g}; beliefs must sum to 1 "
                             f"(within {BELIEF_ATOL:g})")
    return vecs


#: Tolerance of the sum-to-one check of beliefs set from Python (float32 rounding of
#: a few hundred states is far below it; an unnormalised vector far above).
BELIEF_ATOL = 1e-4


def check_numeric_arrays(name: str, x: Any) -> None:
    """Arrays (or object arrays / lists of arrays) hold real numbers, not dates or strings."""
    items: Iterable = ([x] if isinstance(x, np.ndarray) and x.dtype != object
                       else x if isinstance(x, (np.ndarray, list, tuple)) else [])
    for i, a in enumerate(items):
        if isinstance(a, np.ndarray) and a.dtype.kind not in "fiub" and a.dtype != object:
            raise OptionTypeError(f"{name}[{i}] must hold real numbers, got dtype {a.dtype}")


def as_index(name: str, v: Any) -> int:
    """``v`` as a Python int via ``operator.index`` (refuses floats and bools)."""
    if isinstance(v, _BOOL_TYPES):
        raise OptionTypeError(f"{name} must be an integer, got a bool")
    try:
        return operator.index(v)
    except TypeError:
        raise OptionTypeError(f"{name} must be an integer, got {type(v).__name__} {v!r}") from None


#: The keywords Agent, Population and ShardedPopulation share, each with its check
#: (``value -> value as stored``, or the error the tests expect). Population applies
#: every one (in its constructor, on assignment and on restore; ShardedPopulation
#: through the Population it probes with); Agent applies ``action_selection``,
#: ``sampling_mode`` and ``inference_params`` (VANILLA) and, as pymdp, accepts any
#: truthy ``use_*`` and any finite learning rate (:data:`AGENT_RATE_CHECK`).
OPTION_CHECKS = {
    "action_selection": _choice_check("action_selection", ACTION_SELECTIONS),
    "sampling_mode": _choice_check("sampling_mode", SAMPLING_MODES),
    "use_utility": _bool_check("use_utility"),
    "use_states_info_gain": _bool_check("use_states_info_gain"),
    "use_param_info_gain": _bool_check("use_param_info_gain"),
    "inference_params": check_inference_params,
    "lr_pA": _rate_check("lr_pA"),
    "lr_pB": _rate_check("lr_pB"),
    "lr_pD": _rate_check("lr_pD"),
}

#: Agent's learning-rate check: finite, any sign (pymdp's update rules take it as given).
AGENT_RATE_CHECK = check_float
