"""The commands as `python -m jobs.<command>` in a checkout (Make, `ray job submit --working-dir .`); the code is
pythia_sweep/commands/, installed as `pythia-sweep <command>`. configs/ holds the shipped run configs."""
