"""`python -m jobs.demo` in a checkout: `pythia-sweep demo` once installed (pythia_sweep/commands/demo.py)."""

import sys

from pythia_sweep.commands.demo import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
