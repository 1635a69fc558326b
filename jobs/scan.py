"""A full layer x head scan at chosen checkpoints: every head of every layer patched alone.

    python -m jobs.scan jobs/configs/demo.toml --revisions step1500
    python -m jobs.scan jobs/configs/pythia160m-log.toml --revisions step143000 step32000

Runs in this process (one checkpoint at a time) and writes reports/<experiment>/scan-<revision>.html
(a layer x head heatmap of the change in answer log-prob difference over the buggy baseline) and .parquet.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.scan", description=__doc__.split("\n")[0])
    parser.add_argument("config", help="run config (TOML): model, preset and patching method")
    parser.add_argument("--revisions", nargs="+", required=True, help="checkpoints to scan, e.g. step143000")
    parser.add_argument("--reports-dir", default="reports", help="where the pages are written (default: reports/)")
    args = parser.parse_args(argv)
    from pythia_sweep.checkpoints import fetch, not_published_message, published_revisions
    from pythia_sweep.config import load_config
    from pythia_sweep.engine import load_model, pick_device, pick_dtype, scan_layers
    from pythia_sweep.errors import PythiaSweepError, RevisionNotPublished
    from pythia_sweep.report import scan_page
    from pythia_sweep.tracking import experiment_name

    try:
        config = load_config(args.config)
        published = published_revisions(config.model)
        device = pick_device(config.device)
        for revision in args.revisions:
            if revision not in {c.revision for c in published}:
                raise RevisionNotPublished(not_published_message(config.model, revision, published))
            loaded = load_model(fetch(config.model, revision).path, device, pick_dtype(config.dtype, device))
            rows = scan_layers(config, loaded)
            folder = Path(args.reports_dir) / experiment_name(config.model, config.layer).replace("/", "__")
            path = scan_page(rows, f"{config.model} at {revision}", folder / f"scan-{revision}")
            print(f"scan of {revision}: {path}")
    except PythiaSweepError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
