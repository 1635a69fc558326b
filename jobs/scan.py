"""`python -m jobs.scan` in a checkout: `pythia-sweep scan` once installed (pythia_sweep/commands/scan.py)."""

import sys

from pythia_sweep.commands.scan import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
