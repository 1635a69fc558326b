"""Pinpoint the emergence step of a finished sweep by bisecting over the published revisions.

    python -m jobs.refine jobs/configs/pythia160m-log.toml          # the sweep of that config
    python -m jobs.refine jobs/configs/demo.toml --metric clean/success_rate
    make refine CONFIG=jobs/configs/demo.toml METRIC=clean/success_rate

Each probe is a one-checkpoint sweep recorded in the same MLflow sweep, so the report shows it too.
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.refine", description=__doc__.split("\n")[0])
    parser.add_argument("config", help="the run config of the sweep to refine")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db)")
    parser.add_argument("--threshold", type=float, default=0.5, help="threshold whose first crossing is bracketed (default 0.5)")
    parser.add_argument("--metric", default="strength", help="what crosses it: strength (default) or e.g. clean/success_rate")
    parser.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    args = parser.parse_args(argv)
    from pythia_sweep.checkpoints import published_revisions
    from pythia_sweep.config import load_config
    from pythia_sweep.errors import PythiaSweepError

    try:
        config = load_config(args.config)
        published = published_revisions(config.model)
        from pythia_sweep.refine import bisect_emergence, metric_value
        from pythia_sweep.sweep import run_sweep
        from pythia_sweep.tracking import Tracker

        tracker = Tracker(args.tracking_uri)
        parent = tracker.existing_sweep(config)
        records = [r for r in tracker.load_records(parent) if r["status"] == "ok"] if parent else []
        if not records:
            print(f"error: sweep {parent} has no finished checkpoints: run `python -m jobs.sweep {args.config}` first", file=sys.stderr)
            return 2
        try:
            known = {r["revision"]: metric_value(r, args.metric) for r in records}
        except ValueError as error:
            parser.error(str(error))

        def measure(revision: str) -> float:
            run_sweep(config.replace(checkpoints=(revision,)), tracking_uri=tracker.uri, ray_address=args.address,
                      published=published, progress=False)  # fmt: skip
            (record,) = [r for r in tracker.load_records(parent) if r["revision"] == revision]
            if record["status"] != "ok":
                raise PythiaSweepError(f"probe {revision} failed: {record['error']}")
            return metric_value(record, args.metric)

        bracket = bisect_emergence(published, known, measure, args.threshold)
    except PythiaSweepError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if bracket.above is None or bracket.below is None:
        print(f"nothing to bisect: {bracket.note}")
    else:
        print(f"{args.metric} first exceeds {args.threshold} between {bracket.below} and {bracket.above}")
    print(f"fetched {len(bracket.fetched)} extra checkpoints ({', '.join(bracket.fetched) or 'none'}) "
          f"instead of the {bracket.gap} published revisions in the gap")  # fmt: skip
    if bracket.note and bracket.above and bracket.below:
        print(bracket.note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
