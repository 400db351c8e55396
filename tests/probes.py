"""Running code in a fresh interpreter, for probes that used to crash the process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import fa_core


def run_probe(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that imports the fa_core these tests import
    (the checkout's, or an installed wheel's when the tests run against one)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(fa_core.__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=root)
