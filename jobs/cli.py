"""What every entry point shares: a --help that shows the module's examples as written and each flag's default,
and one line on stderr with exit status 2 for anything the user can fix (never a traceback)."""

from __future__ import annotations

import argparse
import sys


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help shows the module's examples as written, and every flag's default."""


def parser_for(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The argument parser of `python -m <module>`, its description the module's docstring."""
    return argparse.ArgumentParser(prog=f"python -m {module}", description=doc, formatter_class=HelpFormatter)


def refused(error: Exception | str) -> int:
    """Say what the user must fix, in one line, and return the exit status for it."""
    print(f"error: {error}", file=sys.stderr)
    return 2
