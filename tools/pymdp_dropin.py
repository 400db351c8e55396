"""Run pymdp's own Agent tests with ``fa_core.Agent`` swapped in for pymdp's.

Usage::

    python tools/pymdp_dropin.py PATH_TO_PYMDP_CHECKOUT [pytest args...]

Reads ``test/test_agent.py`` and ``test/test_SPM_validation.py`` from a checkout
of infer-actively/pymdp, rewrites only their ``from pymdp.legacy.agent import
Agent`` line to ``from fa_core import Agent`` into a temporary directory (the
files are not copied into this project), and runs pytest on them from the
checkout's root (the SPM test reads its MATLAB fixtures by relative path).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

FILES = ("test/test_agent.py", "test/test_SPM_validation.py")
REFERENCE = "from pymdp.legacy.agent import Agent"
SUBJECT = "from fa_core import Agent"


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    checkout, extra = os.path.abspath(argv[0]), argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for rel in FILES:
            with open(os.path.join(checkout, rel)) as fh:
                text = fh.read()
            if text.count(REFERENCE) != 1:
                raise SystemExit(f"{rel}: expected one line '{REFERENCE}'")
            path = os.path.join(tmp, "fa_core_" + os.path.basename(rel))
            with open(path, "w") as fh:
                fh.write(text.replace(REFERENCE, SUBJECT))
            paths.append(path)
        return subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                "--rootdir", tmp, *paths, *extra], cwd=checkout)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
