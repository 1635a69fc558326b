"""Pinpoint the emergence step of a finished sweep by bisecting over the published revisions.

    python -m jobs.refine jobs/configs/pythia160m-log.toml          # the sweep of that config
    python -m jobs.refine --sweep <sweep_id>                         # the sweep a verdict names (its "stage" or "to settle" line)
    python -m jobs.refine jobs/configs/demo.toml --metric clean/success_rate   (offline: HF_HUB_OFFLINE=1 HF_HUB_CACHE=.cache/hf/hub)
    make refine CONFIG=jobs/configs/demo.toml METRIC=clean/success_rate

Each probe is a one-checkpoint sweep recorded in the same MLflow sweep; the report is rebuilt at the end (and
`make report` afterwards finds this sweep: the latest is the one last run or refined). For the headline, what it
prints is the rebuilt verdict, whose "when" line is the one interval on the step (prompt resamples and the
checkpoint grid, probes included); for another metric, the bracket on its mean over prompts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pythia_sweep.commands.cli import parser_for, refused


def main(argv=None) -> int:
    parser = parser_for("jobs.refine", __doc__)
    parser.add_argument("config", nargs="?", help="the run config of the sweep to refine (or --sweep)")
    parser.add_argument("--sweep", help="the sweep to refine, by sweep_id, parent run id or name, instead of its config")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI; unset: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db")
    parser.add_argument("--threshold", type=float, help="threshold whose first crossing is bracketed (default: the headline's strong level)")
    parser.add_argument("--metric", help="what crosses it: a contrast of the task (default: its headline) or any record number, e.g. clean/success_rate")
    parser.add_argument("--task", help="override: the task file of the sweep to refine")
    parser.add_argument("--address", help="Ray cluster address; unset: $RAY_ADDRESS, else a local Ray on 127.0.0.1")
    parser.add_argument("--reports-dir", default="reports", help="where the rebuilt report is written")
    args = parser.parse_args(argv)
    if (args.config is None) == (args.sweep is None):
        parser.error("name the sweep to refine: its run config, or --sweep <sweep_id> (one of the two)")
    from pythia_sweep.commands.sweep import keep_local_ray_on_loopback

    keep_local_ray_on_loopback(args.address)
    from pythia_sweep.config import load_config
    from pythia_sweep.errors import PythiaSweepError

    try:
        from pythia_sweep.tracking.reader import SweepReader

        tracker = SweepReader(args.tracking_uri)
        if args.sweep:
            parent = tracker.find_sweep(args.sweep)
            config, task = tracker.sweep_config(parent), tracker.sweep_task(parent)
            if config.offline_cache and not os.environ.get("HF_HUB_CACHE"):
                # its cache must be named before huggingface_hub is imported, and reading the store imported it: run again, named
                env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(Path(config.offline_cache).resolve())}
                return subprocess.call([sys.executable, "-m", "pythia_sweep.commands.refine", *(sys.argv[1:] if argv is None else argv)], env=env)
        else:
            from pythia_sweep.task.schema import load_task

            config = load_config(args.config, task=args.task)
            task = load_task(config.task)
            parent = tracker.existing_sweep(config, task)
        config.use_offline_cache()  # the demo config reads its own cache, offline (before huggingface_hub is imported)
        from pythia_sweep.hub.revisions import published_revisions

        metric = args.metric or task.headline.name
        threshold = args.threshold if args.threshold is not None else task.headline.threshold
        published = published_revisions(config.model)
        from pythia_sweep.run.refine import metric_value, refine_sweep

        records = [r for r in tracker.load_records(parent) if r.ok] if parent else []
        if not records:
            return refused(f"MLflow parent run {parent} has no finished checkpoints: run `python -m jobs.sweep {args.config or '<config>'}` first")
        try:
            metric_value(records[0], metric)  # a metric the records do not have: refused before any probe
        except ValueError as error:
            parser.error(str(error))
        bracket = refine_sweep(config, task, published, records, metric, threshold, tracking_uri=tracker.uri, ray_address=args.address)
    except PythiaSweepError as error:
        return refused(error)
    headline = metric == task.headline.name and threshold == task.headline.threshold
    if bracket.above is None or bracket.below is None:
        print(f"nothing to bisect: {bracket.note}")
    elif not headline:  # the headline's interval is the verdict's, printed below; another metric has only its mean's bracket
        print(f"{metric}: its mean over prompts first exceeds {threshold:g} after {bracket.below}, by {bracket.above} (neighbouring "
              "published revisions; no prompt resampling for this metric)")  # fmt: skip
    print(f"measured {len(bracket.fetched)} more revisions ({', '.join(bracket.fetched) or 'none'}) "
          f"instead of the {bracket.gap} published in the gap")  # fmt: skip
    if bracket.note and bracket.above and bracket.below:
        print(bracket.note)
    from pythia_sweep.report.build import build_report

    try:  # the probes are in the sweep now: the report must say what they changed
        report = build_report(parent, tracking_uri=tracker.uri, reports_dir=args.reports_dir)
    except OSError as error:
        print(f"the report could not be rebuilt here ({error}); rebuild it with python -m jobs.report --sweep {parent}")
        return 0
    print(report.verdict)
    print(report.mlflow_link)
    print(f"report: {report.html_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
