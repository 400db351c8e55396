"""Count fa_core's public callables whose docstrings have numpydoc Parameters, Returns, Examples.

Usage: ``python tools/docstring_coverage.py [--list]``. Public means: a module's ``__all__``
(or, for modules without one, the names ``fa_core/__init__.py`` re-exports from it, or else
the module's functions without a leading underscore), and the
public methods a public class defines itself. The checks are numpydoc's own
(:func:`numpydoc.validate.validate`): GL08 (no docstring), PR01 (a parameter not documented),
RT01 (no Returns section where the function returns a value), EX01 (no Examples section).
Exit status 1 when a callable misses one, so CI can hold the line.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys

from numpydoc.validate import validate

# The checkout's package when its extensions are built in place, else the installed fa_core.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if any(f.startswith("_kernels") and f.endswith((".so", ".pyd"))
       for f in os.listdir(os.path.join(ROOT, "fa_core"))):
    sys.path.insert(0, ROOT)
else:
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != ROOT]
import fa_core  # noqa: E402

MODULES = ["agent", "population", "model", "distributed", "lifecycle", "memory", "envs",
           "builtin_models", "policies", "errors"]
CHECKS = {"GL08": "docstring", "PR01": "Parameters", "RT01": "Returns", "EX01": "Examples"}


def public_names(modname: str) -> list[str]:
    mod = importlib.import_module(f"fa_core.{modname}")
    if hasattr(mod, "__all__"):
        return list(mod.__all__)
    exported = [n for n in fa_core.__all__
                if getattr(getattr(fa_core, n), "__module__", None) == mod.__name__]
    # a module neither lists nor re-exports anything (policies): its public functions
    return exported or [n for n, v in vars(mod).items() if not n.startswith("_")
                        and inspect.isfunction(v) and v.__module__ == mod.__name__]


def callables() -> list[str]:
    out = []
    for modname in MODULES:
        mod = importlib.import_module(f"fa_core.{modname}")
        for name in public_names(modname):
            obj = getattr(mod, name)
            if not callable(obj):
                continue  # constants (MODELS, GRID_ACTIONS, ...) are documented as data
            path = f"fa_core.{modname}.{name}"
            out.append(path)
            if inspect.isclass(obj):
                for attr, value in vars(obj).items():
                    if attr.startswith("_") or isinstance(value, property):
                        continue
                    if isinstance(value, (staticmethod, classmethod)) or inspect.isfunction(value):
                        out.append(f"{path}.{attr}")
    return out


def main() -> int:
    missing = {}
    paths = callables()
    for path in paths:
        codes = {e[0] for e in validate(path)["errors"]}
        missing[path] = sorted(CHECKS[c] for c in codes & CHECKS.keys())
    complete = [p for p, m in missing.items() if not m]
    for what in ("Parameters", "Returns", "Examples"):
        ok = sum(what not in m and "docstring" not in m for m in missing.values())
        print(f"{what:10s} complete: {ok}/{len(paths)}")
    print(f"all of Parameters, Returns and Examples: {len(complete)}/{len(paths)} public callables")
    if "--list" in sys.argv:
        for p, m in missing.items():
            if m:
                print(f"  {p}: missing {', '.join(m)}")
    return 0 if len(complete) == len(paths) else 1


if __name__ == "__main__":
    sys.exit(main())
