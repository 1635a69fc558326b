"""What every entry point shares: a --help that shows the module's examples as written and each flag's default,
and one line on stderr with exit status 2 for anything the user can fix (never a traceback)."""

from __future__ import annotations

import argparse
import re
import sys

# How the user started the command: `python -m jobs.<name>` in a checkout, or the installed `pythia-sweep <name>`
# (set by pythia_sweep.commands.main); --help and its examples are written the way it was started.
INVOKED_AS = "python -m jobs."


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help shows the module's examples as written, and every flag's default."""


def command_name(module: str) -> str:
    """jobs.demo_study -> demo-study: the name `pythia-sweep` knows it by."""
    return module.removeprefix("jobs.").replace("_", "-")


def parser_for(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The argument parser of `python -m <module>` (or `pythia-sweep <command>`), its description the module's
    docstring, its examples written the way this command was started."""
    if INVOKED_AS == "python -m jobs.":
        return argparse.ArgumentParser(prog=f"python -m {module}", description=doc, formatter_class=HelpFormatter)
    doc = re.sub(r"python -m jobs\.(\w+)", lambda m: INVOKED_AS + command_name(m[1]), doc or "")
    return argparse.ArgumentParser(prog=INVOKED_AS + command_name(module), description=doc, formatter_class=HelpFormatter)


def refused(error: Exception | str) -> int:
    """Say what the user must fix, in one line, and return the exit status for it."""
    print(f"error: {error}", file=sys.stderr)
    return 2
