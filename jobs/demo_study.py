"""`python -m jobs.demo_study` in a checkout: `pythia-sweep demo-study` once installed (pythia_sweep/commands/demo_study.py)."""

import sys

from pythia_sweep.commands.demo_study import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
