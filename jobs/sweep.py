"""`python -m jobs.sweep` in a checkout: `pythia-sweep sweep` once installed (pythia_sweep/commands/sweep.py)."""

import sys

from pythia_sweep.commands.sweep import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
