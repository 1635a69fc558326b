"""`python -m jobs.local_cluster` in a checkout: `pythia-sweep local-cluster` once installed (pythia_sweep/commands/local_cluster.py)."""

import sys

from pythia_sweep.commands.local_cluster import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
