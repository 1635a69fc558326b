"""A full layer x head scan at chosen checkpoints: every head of every layer patched alone.

    HF_HUB_OFFLINE=1 HF_HUB_CACHE=.cache/hf/hub python -m jobs.scan jobs/configs/demo.toml --revisions step448
    HF_HUB_OFFLINE=1 HF_HUB_CACHE=.cache/hf/hub python -m jobs.scan jobs/configs/demo.toml --task tasks/induction-demo.toml \
        --revisions step192 step448 --attribution
    python -m jobs.scan jobs/configs/pythia160m-log.toml --task tasks/induction.toml --revisions step143000 step32000

Runs in this process (one checkpoint at a time) on the config's task (or --task) and writes
reports/<model>__<task>/scan-<revision>.html (a layer x head heatmap of the change in answer log-prob
difference over the corrupted baseline) and .parquet. From the config it uses the model, the task and the
patching method; it ignores the checkpoints, the groups' layer, single_heads, null_subsets and the
controls: every head of every layer is patched alone. With --attribution, every head's attribution
(pythia_sweep/measure/headmap.py: one backward pass for all heads; the config's head_map_method = "ig-inputs" averages it
over head_map_steps points from the corrupted inputs to the clean ones) is set against the scan's exact effects,
and a line per revision says how they agree.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pythia_sweep.commands.cli import parser_for, refused


def main(argv=None) -> int:
    parser = parser_for("jobs.scan", __doc__)
    parser.add_argument("config", help="run config (TOML): model, task and patching method")
    parser.add_argument("--revisions", nargs="+", required=True, help="checkpoints to scan, e.g. step143000")
    parser.add_argument("--task", help="override: the task file whose prompts are scanned")
    parser.add_argument("--reports-dir", default="reports", help="where the pages are written")
    parser.add_argument("--attribution", action="store_true", help="also every head by attribution patching, against the exact scan")
    args = parser.parse_args(argv)
    from pythia_sweep.config import load_config
    from pythia_sweep.errors import PythiaSweepError, RevisionNotPublished

    try:
        config = load_config(args.config, task=args.task)
        config.use_offline_cache()  # the demo config reads its own cache, offline (before huggingface_hub is imported)
        from pythia_sweep.hub.fetch import fetch
        from pythia_sweep.hub.revisions import not_published_message, published_revisions
        from pythia_sweep.measure.loading import load_model, pick_device, pick_dtype
        from pythia_sweep.report.build import report_folder
        from pythia_sweep.report.scan_page import scan_page
        from pythia_sweep.measure.scan import scan_layers
        from pythia_sweep.task.schema import load_task

        task = load_task(config.task)
        published = published_revisions(config.model)
        device = pick_device(config.device)
        for revision in args.revisions:
            if revision not in {c.revision for c in published}:
                raise RevisionNotPublished(not_published_message(config.model, revision, published))
            loaded = load_model(fetch(config.model, revision).path, device, pick_dtype(config.dtype, device))
            scan = scan_layers(config, task, loaded)
            folder = Path(args.reports_dir) / report_folder(config.model, task.name)
            path = scan_page(scan, f"{config.model} at {revision}", folder / f"scan-{revision}")
            print(f"scan of {revision}: {path}")
            if args.attribution:
                print(f"  {revision}: {attribution_against_scan(config, task, loaded, scan)}")
    except PythiaSweepError as error:
        return refused(error)
    return 0


def attribution_against_scan(config, task, loaded, scan, k: int = 3) -> str:
    """Every head's attribution set against its exact effect in the scan (patched minus the baseline): the line
    --attribution prints."""
    from pythia_sweep.measure.loading import batch_size_for
    from pythia_sweep.errors import ConfigError
    from pythia_sweep.measure.batch import pad_id_of
    from pythia_sweep.measure.headmap import agreement, attribution, top_heads
    from pythia_sweep.measure.patching import attention_layout
    from pythia_sweep.report.heads import estimated_by
    from pythia_sweep.stats import head_label

    _, method = config.primary_method(task.align)
    if method["site"] != "head":
        raise ConfigError("site", method["site"], "head for --attribution (it estimates patching the heads' outputs)")
    pairs = task.tokenize(loaded.tokenizer, {method["align"]})
    scores = attribution(loaded.model, attention_layout(loaded.model), pairs, method["align"], pad_id_of(loaded.tokenizer),
                         batch_size_for(config, loaded, pairs), config.attribution_steps)  # fmt: skip
    exact = scan.effects()
    agree = agreement(scores, exact, k)
    by_size = sorted(exact, key=lambda h: abs(exact[h]), reverse=True)[:k]
    name = lambda heads: ", ".join(head_label(*h) for h in heads)  # noqa: E731
    rho = "undefined" if agree["rank_correlation"] is None else f"{agree['rank_correlation']:.2f}"
    top = by_size[0]
    return (f"{estimated_by({'method': config.head_map_method, 'steps': config.head_map_steps})} against exact patching over all {len(exact)} heads: rank correlation {rho}; top {k} by size: "
            f"exact {name(by_size)}, attribution {name(top_heads(scores, k))} ({agree['top_k_found']} of {k} found); "
            f"head {head_label(*top)}: exact {exact[top]:+.2f} nats, attribution {float(scores[top]):+.2f}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
