"""Overlay the strength timelines of several sweeps (another layer, model size, or method) in one page.

    python -m jobs.compare <sweep> <sweep> [...] [--out reports/compare.html]
"""

from __future__ import annotations

import sys

from pythia_sweep.commands.cli import parser_for, refused


def main(argv=None) -> int:
    parser = parser_for("jobs.compare", __doc__)
    parser.add_argument("sweeps", nargs="+", help="sweeps: MLflow parent run ids, sweep_ids or run names")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI; unset: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db")
    parser.add_argument("--out", default="reports/compare.html", help="output page")
    args = parser.parse_args(argv)
    from pythia_sweep.errors import PythiaSweepError
    from pythia_sweep.report.compare import compare_sweeps

    try:
        path = compare_sweeps(args.sweeps, tracking_uri=args.tracking_uri, out=args.out)
    except PythiaSweepError as error:
        return refused(error)
    print(f"comparison: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
