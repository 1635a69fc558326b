"""`python -m jobs.refine` in a checkout: `pythia-sweep refine` once installed (pythia_sweep/commands/refine.py)."""

import sys

from pythia_sweep.commands.refine import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
