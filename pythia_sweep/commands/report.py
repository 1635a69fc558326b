"""Build the emergence report of a sweep (finished or partial) from MLflow.

    python -m jobs.report                      # the latest sweep
    python -m jobs.report --sweep <parent run id, sweep_id or run name>
    make report SWEEP=<parent run id, sweep_id or run name>
    python -m jobs.report --study <name>       # a study's report: each run's emergence side by side (pythia_sweep/run/study.py)

It only reads the store: a read-only one is read (the report is then not logged back to MLflow), and a store that
is not there is refused rather than created. A sweep that is not found is answered with the ones there are.
"""

from __future__ import annotations

import sys

from pythia_sweep.commands.cli import parser_for, refused


def main(argv=None) -> int:
    parser = parser_for("jobs.report", __doc__)
    parser.add_argument("--sweep", help="the sweep: its MLflow parent run id, its sweep_id or its run name; unset: the latest sweep")
    parser.add_argument("--study", help="a study's name (its config's `study`): the study's report, and each of its sweeps'")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI; unset: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db")
    parser.add_argument("--reports-dir", default="reports", help="where reports are written")
    args = parser.parse_args(argv)
    from pythia_sweep.errors import PythiaSweepError
    from pythia_sweep.report.build import build_report

    if args.study and args.sweep:
        parser.error("--study and --sweep: one or the other")
    try:
        if args.study:
            from pythia_sweep.report.study import build_study_report

            study = build_study_report(args.study, tracking_uri=args.tracking_uri, reports_dir=args.reports_dir)
            print(study.statement)
            print(f"study report: {study.html_path}")
            return 0
        report = build_report(args.sweep, tracking_uri=args.tracking_uri, reports_dir=args.reports_dir)
    except PythiaSweepError as error:
        return refused(error)
    print(report.verdict)
    print(report.mlflow_link)
    print(f"report: {report.html_path}")
    if not report.logged:
        print("the tracking store is read-only here: the report is written above, not logged back to its MLflow run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
