"""`python -m jobs.report` in a checkout: `pythia-sweep report` once installed (pythia_sweep/commands/report.py)."""

import sys

from pythia_sweep.commands.report import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
