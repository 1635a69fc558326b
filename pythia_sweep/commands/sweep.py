"""Sweep every checkpoint of a model family, record it in MLflow, and write the emergence report.

    python -m jobs.sweep jobs/configs/pythia160m-log.toml
    python -m jobs.sweep jobs/configs/pythia160m-log.toml --task tasks/ioi.toml
    HF_HUB_OFFLINE=1 HF_HUB_CACHE=.cache/hf/hub python -m jobs.sweep jobs/configs/demo.toml --checkpoints step0,step256,step448
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m jobs.sweep jobs/configs/demo.toml
    python -m jobs.sweep jobs/configs/demo.toml --forget step-1,stepABC      # remove revisions' records from the sweep

Rerunning the same command resumes: checkpoints already recorded are skipped, failed ones retried. A revision the
model does not publish stops the command before anything runs (exit 2), naming the nearest published ones; a config
that asks for such revisions on purpose says `unpublished = "list"` (jobs/configs/methodology.toml), and they are
listed in its report as asked for, not published. A failed record is a real failure (a download, a load, a crash).
--forget removes the named revisions' records from the sweep the config (with its overrides) names, whatever their
status, and measures nothing: its report no longer shows them (the parent run's charts keep a point already drawn).
"""

from __future__ import annotations

import argparse
import os
import sys

from pythia_sweep.commands.cli import parser_for, refused


def keep_local_ray_on_loopback(address: str | None) -> None:
    """A sweep without a cluster address starts its own one-machine Ray: keep it on 127.0.0.1. Ray reads this
    switch when it is imported; left unset, Ray rewrites 127.0.0.1 to the machine's network address."""
    if not (address or os.environ.get("RAY_ADDRESS")):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def workers_setting(text: str) -> int | str:
    """--workers: "auto" or a count (0: in this process, no Ray)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"workers={text!r} is not valid: auto, or a number of workers (0: in this process)") from None


def parse_args(argv=None) -> argparse.Namespace:
    parser = parser_for("jobs.sweep", __doc__)
    parser.add_argument("config", help="run config (TOML), e.g. jobs/configs/pythia160m-log.toml")
    parser.add_argument("--model", help="override: Hub repo id, e.g. EleutherAI/pythia-410m")
    parser.add_argument("--checkpoints", help="override: schedule (seed, log, all) or comma-separated revisions")
    parser.add_argument("--task", help="override: task file (prompts, answers, head groups, contrasts), e.g. tasks/ioi.toml")
    parser.add_argument("--layer", type=int, help="override: layer of the task's groups written without one")
    parser.add_argument("--method", help="override: per-head, upstream, or both")
    parser.add_argument("--workers", type=workers_setting, help="override: auto, N Ray workers, or 0 for no Ray (in this process)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI; unset: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db")
    parser.add_argument("--address", help="Ray cluster address; unset: $RAY_ADDRESS, else a local Ray on 127.0.0.1")
    parser.add_argument("--no-report", action="store_true", help="skip writing the emergence report")
    parser.add_argument("--reports-dir", default="reports", help="where reports are written")
    parser.add_argument("--forget", metavar="REVISIONS", help="remove these revisions' records (comma-separated, e.g. step-1,stepABC) "
                        "from the config's sweep, then stop: nothing is measured")  # fmt: skip
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    keep_local_ray_on_loopback(args.address)
    from pythia_sweep.config import SCHEDULES
    from pythia_sweep.run.study import load_study
    from pythia_sweep.errors import PythiaSweepError

    checkpoints = args.checkpoints
    if checkpoints and checkpoints not in SCHEDULES:
        checkpoints = [c.strip() for c in checkpoints.split(",") if c.strip()]
    try:
        study = load_study(
            args.config, model=args.model, checkpoints=checkpoints, layer=args.layer, task=args.task,
            method=args.method, workers=args.workers,
        )  # fmt: skip
        config = study.configs[0]
        config.use_offline_cache()  # the demo config reads its own cache, offline (before huggingface_hub is imported)
        from pythia_sweep.hub.revisions import check_published, published_revisions, resolve_schedule
        from pythia_sweep.task.schema import load_task

        task = load_task(config.task)  # a malformed task file: one line, before anything starts
        if args.forget:
            return forget(study, task, [r.strip() for r in args.forget.split(",") if r.strip()], args.tracking_uri)
        published = {c.model: published_revisions(c.model) for c in study.configs}  # before the heavy imports: no Hub, stop at once
        for c in study.configs:  # a revision not published: refused now, before Ray, torch and the store
            check_published(c.model, resolve_schedule(c.model, c.checkpoints, published[c.model]), published[c.model], c.unpublished)
        from pythia_sweep.run.driver import run_study

        results = run_study(study.configs, task, tracking_uri=args.tracking_uri, ray_address=args.address, published=published,
                            study=study.name if study.named else None)  # fmt: skip
        for model, result in zip(study.models, results):
            print(
                f"{model + ': ' if study.named else ''}MLflow parent run {result.parent_run_id}: {len(result.recorded)} checkpoints "
                f"recorded ({len(result.failed)} failed), {len(result.skipped)} already done; store {result.tracking_uri}"
            )  # fmt: skip
        if not args.no_report:
            report_sweeps(study, results, args.reports_dir)
    except PythiaSweepError as error:
        return refused(error)
    except KeyboardInterrupt:
        print("interrupted: the sweep is marked KILLED; run the same command again to resume it", file=sys.stderr)
        return 130
    return 0


def forget(study, task, revisions: list[str], tracking_uri: str | None) -> int:
    """--forget: the named revisions' records removed from each of the config's sweeps (a study's: every model's)."""
    from pythia_sweep.tracking.reader import SweepReader
    from pythia_sweep.tracking.writer import SweepRecorder

    for config in study.configs:
        reader = SweepReader(tracking_uri)  # a store that is not there is refused, not created
        parent = reader.find_sweep(config.sweep_id(task.digest))
        removed = SweepRecorder(reader.uri).forget(parent, revisions)
        said = ", ".join(f"{revision} ({len(statuses)} {'/'.join(sorted(set(statuses)))} record{'s' * (len(statuses) != 1)})"
                         for revision, statuses in removed.items())  # fmt: skip
        print(f"{config.model}: forgot {said} from sweep {config.label(task.name)} (MLflow parent run {parent}); "
              f"rebuild its report with python -m jobs.report --sweep {parent}")  # fmt: skip
    return 0


def report_sweeps(study, results, reports_dir: str) -> None:
    """Each sweep's report, or for a study the study's report (which writes each run's report too)."""
    from pythia_sweep.report.build import build_report
    from pythia_sweep.report.study import build_study_report

    uri = results[0].tracking_uri
    try:
        if study.named:
            report = build_study_report(study.name, tracking_uri=uri, reports_dir=reports_dir)
            print(report.statement)
            print(f"study report: {report.html_path}")
            return
        report = build_report(results[0].parent_run_id, tracking_uri=uri, reports_dir=reports_dir)
    except OSError as error:  # e.g. a Ray job's temporary working dir, gone: the sweep itself is saved
        again = f"--study {study.name}" if study.named else f"--sweep {results[0].parent_run_id}"
        print(f"the report could not be written here ({error}); every record is in the store: rebuild it with "
              f"python -m jobs.report {again} --tracking-uri {uri}")  # fmt: skip
        return
    print(report.verdict)
    print(report.mlflow_link)
    print(f"report: {report.html_path}")


if __name__ == "__main__":
    sys.exit(main())
