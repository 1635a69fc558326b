"""`python -m jobs.circuits` in a checkout: `pythia-sweep circuits` once installed (pythia_sweep/commands/circuits.py)."""

import sys

from pythia_sweep.commands.circuits import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
