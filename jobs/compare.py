"""`python -m jobs.compare` in a checkout: `pythia-sweep compare` once installed (pythia_sweep/commands/compare.py)."""

import sys

from pythia_sweep.commands.compare import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
