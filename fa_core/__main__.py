"""``python -m fa_core``: the command line of :mod:`fa_core.cli` (also installed as ``fa-core``)."""

import sys

from fa_core.cli import main, run, simulate  # noqa: F401 - simulate and run for importers

if __name__ == "__main__":
    sys.exit(main(prog="python -m fa_core"))
