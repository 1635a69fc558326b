"""Overlay the strength timelines of several sweeps (another layer, model size, or method) in one page.

    python -m jobs.compare <sweep> <sweep> [...] [--out reports/compare.html]
"""

from __future__ import annotations

import argparse
import sys


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help shows the module's examples as written, and every flag's default."""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.compare", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("sweeps", nargs="+", help="parent run ids or run names")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI; unset: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db")
    parser.add_argument("--out", default="reports/compare.html", help="output page")
    args = parser.parse_args(argv)
    from pythia_sweep.errors import PythiaSweepError
    from pythia_sweep.report import compare_sweeps

    try:
        path = compare_sweeps(args.sweeps, tracking_uri=args.tracking_uri, out=args.out)
    except PythiaSweepError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"comparison: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
