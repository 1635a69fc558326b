"""`python -m jobs.bench` in a checkout: `pythia-sweep bench` once installed (pythia_sweep/commands/bench.py)."""

import sys

from pythia_sweep.commands.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
