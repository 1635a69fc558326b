"""The commands: `pythia-sweep <command> [options]` once installed, `python -m jobs.<command>` in a checkout (the
same modules, the same options). `pythia-sweep <command> --help` shows each one's examples and defaults.

    pythia-sweep demo                                   the whole pipeline offline, on a family trained here
    pythia-sweep sweep demo --checkpoints step0,step448 a run config by name (or path), a few revisions
    pythia-sweep report                                 the latest sweep's report, rebuilt from the store
"""

from __future__ import annotations

import importlib
import sys

from pythia_sweep.commands import cli

COMMANDS = {
    "demo": "train the demo family (once) and run the whole pipeline on it, offline",
    "demo-study": "the demo family trained with three more seeds, swept as one study, side by side",
    "sweep": "measure every checkpoint a run config names, record them in MLflow, write the report",
    "report": "rebuild a sweep's report (and verdict) from the store",
    "refine": "bisect the saved revisions around a sweep's crossing",
    "scan": "every head of a layer (or all) patched alone, over the checkpoints",
    "compare": "two or more sweeps on one page",
    "circuits": "the edges that carry a task, per checkpoint, verified by patching",
    "bench": "time the sweep against the plain way (`make bench`)",
    "local-cluster": "a two-node Ray cluster on this machine, to try `ray job submit`",
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    return "usage: pythia-sweep <command> [options]   (pythia-sweep <command> --help)\n\ncommands:\n" + "\n".join(
        f"  {name:<{width}}  {what}" for name, what in COMMANDS.items()
    )


def main(argv: list[str] | None = None) -> int:
    """The console command: the first word picks the command, the rest are its options."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, options = argv[0], argv[1:]
    if name not in COMMANDS:
        return cli.refused(f"command {name!r} is not one of: {', '.join(COMMANDS)} (pythia-sweep --help)")
    cli.INVOKED_AS = "pythia-sweep "
    module = importlib.import_module(f"pythia_sweep.commands.{name.replace('-', '_')}")
    return module.main(options)
