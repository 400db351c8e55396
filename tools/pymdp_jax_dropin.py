"""Run pymdp's own JAX Agent tests with ``fa_core.jax.Agent`` swapped in for pymdp's.

Usage::

    python tools/pymdp_jax_dropin.py PATH_TO_PYMDP_CHECKOUT [pytest args...]

Reads ``test/test_agent_jax.py`` from a checkout of infer-actively/pymdp,
rewrites only its ``from pymdp.agent import Agent`` line to ``from
fa_core.jax import Agent`` into a temporary directory (the file is not copied
into this project) and runs pytest on it from the checkout's root. The tests
that take gradients through the agent are deselected by default (fa_core's
kernels are not differentiable; the agent raises a clear error instead): pass
``--all`` to run them too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

FILE = "test/test_agent_jax.py"
REFERENCE = "from pymdp.agent import Agent"
SUBJECT = "from fa_core.jax import Agent"
#: tests that differentiate through the agent (out of scope, see the module docstring)
GRADIENT_TESTS = ("test_valid_gradients",)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    checkout, extra = os.path.abspath(argv[0]), argv[1:]
    run_all = "--all" in extra
    extra = [a for a in extra if a != "--all"]
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(checkout, FILE)) as fh:
            text = fh.read()
        if text.count(REFERENCE + "\n") != 1:
            raise SystemExit(f"{FILE}: expected one line '{REFERENCE}'")
        path = os.path.join(tmp, "fa_core_" + os.path.basename(FILE))
        with open(path, "w") as fh:
            fh.write(text.replace(REFERENCE + "\n", SUBJECT + "\n"))
        deselect = [] if run_all else ["-k", " and ".join(f"not {t}" for t in GRADIENT_TESTS)]
        env = dict(os.environ)
        # the checkout's sources must not shadow the installed pymdp; this project comes first
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join([here] + [p for p in env.get("PYTHONPATH", "").split(
            os.pathsep) if p])
        return subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                "--rootdir", tmp, path, *deselect, *extra], cwd=checkout, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
