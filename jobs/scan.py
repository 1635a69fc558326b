"""A full layer x head scan at chosen checkpoints: every head of every layer patched alone.

    HF_HUB_OFFLINE=1 HF_HUB_CACHE=.cache/hf/hub python -m jobs.scan jobs/configs/demo.toml --revisions step1500
    python -m jobs.scan jobs/configs/pythia160m-log.toml --task tasks/induction.toml --revisions step143000 step32000

Runs in this process (one checkpoint at a time) on the config's task (or --task) and writes
reports/<model>__<task>/scan-<revision>.html (a layer x head heatmap of the change in answer log-prob
difference over the corrupted baseline) and .parquet. From the config it uses the model, the task and the
patching method; it ignores the checkpoints, the groups' layer, single_heads, null_subsets and the
controls: every head of every layer is patched alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

from jobs.cli import parser_for, refused


def main(argv=None) -> int:
    parser = parser_for("jobs.scan", __doc__)
    parser.add_argument("config", help="run config (TOML): model, task and patching method")
    parser.add_argument("--revisions", nargs="+", required=True, help="checkpoints to scan, e.g. step143000")
    parser.add_argument("--task", help="override: the task file whose prompts are scanned")
    parser.add_argument("--reports-dir", default="reports", help="where the pages are written")
    args = parser.parse_args(argv)
    from pythia_sweep.config import load_config
    from pythia_sweep.errors import PythiaSweepError, RevisionNotPublished

    try:
        config = load_config(args.config, task=args.task)
        config.use_offline_cache()  # the demo config reads its own cache, offline (before huggingface_hub is imported)
        from pythia_sweep.checkpoints import fetch, not_published_message, published_revisions
        from pythia_sweep.checkpoint_run import load_model, pick_device, pick_dtype
        from pythia_sweep.report.build import report_folder, scan_page
        from pythia_sweep.scan import scan_layers
        from pythia_sweep.task_schema import load_task

        task = load_task(config.task)
        published = published_revisions(config.model)
        device = pick_device(config.device)
        for revision in args.revisions:
            if revision not in {c.revision for c in published}:
                raise RevisionNotPublished(not_published_message(config.model, revision, published))
            loaded = load_model(fetch(config.model, revision).path, device, pick_dtype(config.dtype, device))
            rows = scan_layers(config, task, loaded)
            folder = Path(args.reports_dir) / report_folder(config.model, task.name)
            path = scan_page(rows, f"{config.model} at {revision}", folder / f"scan-{revision}")
            print(f"scan of {revision}: {path}")
    except PythiaSweepError as error:
        return refused(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
