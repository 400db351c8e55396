"""Run pymdp's legacy tutorial notebooks twice, with pymdp's Agent and with fa_core's.

Usage::

    python tools/pymdp_notebooks.py PATH_TO_PYMDP_CHECKOUT [NOTEBOOK ...]

For each notebook of ``examples/legacy/`` that builds an ``Agent`` (or those
named), the code cells are read from the checkout (never copied into this
project) and run as one script in a fresh process, once as pymdp wrote them
(their 0.0.7-era ``pymdp.X`` imports pointed at ``pymdp.legacy.X``) and once
with only the Agent import swapped for ``from fa_core import Agent``. Both runs
seed ``np.random`` identically, draw figures off screen, and log every
``infer_states`` / ``infer_policies`` / ``sample_action`` result; the script
then reports, per notebook, whether both ran to the end and whether the
agents' actions are equal and beliefs agree (within 1e-4).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import tempfile

import numpy as np

NOTEBOOKS = ("agent_demo", "pymdp_fundamentals", "tmaze_demo", "tmaze_learning_demo",
             "using_the_agent_class")

# records each Agent call's result (as float64 arrays) into _LOG, dumped at exit
PRELUDE = r'''
import atexit, pickle, sys
import numpy as np
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
plt.show = lambda *a, **k: None
_LOG = []
def _flat(x):
    if isinstance(x, tuple):
        return [_flat(v) for v in x]
    if isinstance(x, np.ndarray) and x.dtype == object:
        return [_flat(v) for v in x]
    return np.array(x, dtype=np.float64)
def _wrap(cls):
    for name in ("infer_states", "infer_policies", "sample_action"):
        orig = getattr(cls, name)
        def call(self, *a, _orig=orig, _name=name, **k):
            out = _orig(self, *a, **k)
            _LOG.append((_name, _flat(out)))
            return out
        setattr(cls, name, call)
import {module} as _agent_module
_wrap(_agent_module.Agent)
atexit.register(lambda: pickle.dump(_LOG, open({log!r}, "wb")))
np.random.seed(0)
'''


def script(notebook: str, subject: bool, log: str) -> str:
    """The notebook's code cells as one script, imports mapped to pymdp.legacy."""
    with open(notebook) as fh:
        cells = [c for c in json.load(fh)["cells"] if c["cell_type"] == "code"]
    lines = []
    for cell in cells:
        for line in "".join(cell["source"]).splitlines():
            if line.lstrip().startswith(("%", "!")):
                continue  # IPython magics and shell commands
            line = re.sub(r"\bpymdp\.(?!legacy\b)", "pymdp.legacy.", line)
            line = re.sub(r"from pymdp import", "from pymdp.legacy import", line)
            if subject:
                line = line.replace("from pymdp.legacy.agent import Agent",
                                    "from fa_core import Agent")
            lines.append(line)
    module = "fa_core" if subject else "pymdp.legacy.agent"
    return PRELUDE.format(module=module, log=log) + "\n".join(lines) + "\n"


def run(notebook: str, subject: bool, tmp: str):
    log = os.path.join(tmp, f"{os.path.basename(notebook)}.{int(subject)}.pkl")
    path = log + ".py"
    with open(path, "w") as fh:
        fh.write(script(notebook, subject, log))
    res = subprocess.run([sys.executable, path], cwd=tmp, capture_output=True, text=True,
                         timeout=1800)
    calls = pickle.load(open(log, "rb")) if os.path.exists(log) else []
    return res, calls


def _leaves(x):
    if isinstance(x, list):
        for v in x:
            yield from _leaves(v)
    else:
        yield x


def compare(ref, sub) -> str:
    if len(ref) != len(sub):
        return f"different call counts: pymdp {len(ref)}, fa_core {len(sub)}"
    worst = 0.0
    for i, ((name_r, out_r), (_name_s, out_s)) in enumerate(zip(ref, sub)):
        for a, b in zip(_leaves(out_r), _leaves(out_s)):
            if a.shape != b.shape:
                return f"call {i} ({name_r}): shapes differ"
            if name_r == "sample_action" and not np.array_equal(a, b):
                return f"call {i}: actions differ ({a} vs {b})"
            if name_r != "infer_policies":  # G is compared relatively below
                worst = max(worst, float(np.max(np.abs(a - b), initial=0.0)))
            elif not np.allclose(a, b, rtol=1e-3, atol=1e-4):
                return f"call {i}: policy posterior or G differs"
    return f"{len(ref)} calls, actions equal, max belief difference {worst:.2e}"


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    folder = os.path.join(os.path.abspath(argv[0]), "examples", "legacy")
    names = argv[1:] or NOTEBOOKS
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            nb = os.path.join(folder, name if name.endswith(".ipynb") else name + ".ipynb")
            (res_r, ref), (res_s, sub) = run(nb, False, tmp), run(nb, True, tmp)
            if res_r.returncode:
                print(f"{name}: pymdp itself fails: {res_r.stderr.strip().splitlines()[-1]}")
                continue
            if res_s.returncode:
                failed += 1
                print(f"{name}: FAILS with fa_core: {res_s.stderr.strip().splitlines()[-1]}")
                continue
            verdict = compare(ref, sub)
            failed += not verdict.endswith(tuple("0123456789")) or "differ" in verdict
            print(f"{name}: runs; {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
