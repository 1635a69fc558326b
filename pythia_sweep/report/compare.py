"""The page comparing sweeps: each sweep read from the tracking store and reduced by the same rules as its own
report, its headline over training drawn beside the others' (one panel per unit, each line with its band and its
verdict's call), and each sweep's verdict in words above."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pythia_sweep.report.page import render_html
from pythia_sweep.report.reduce import column, reduce
from pythia_sweep.report.timeline_figures import compare_figure
from pythia_sweep.tracking.reader import SweepReader
from pythia_sweep.tracking.store import TrackingStoreError


def compare_sweeps(sweeps: list[str], *, tracking_uri: str | None = None, out: str | Path = "reports/compare.html") -> Path:
    """One page overlaying the headline timelines of several sweeps (each method of each sweep a line), one panel
    per unit, each line with its band and its verdict's call; each sweep's verdict in words above."""
    reader = SweepReader(tracking_uri)
    series, verdicts = [], []
    parents = [reader.find_sweep(sweep) for sweep in sweeps]
    twice = next((i for i, parent in enumerate(parents) if parent in parents[:i]), None)
    if twice is not None:  # drawn twice, its verdict pasted twice: a typo, never a comparison
        first = parents.index(parents[twice])
        raise TrackingStoreError(f"sweeps={sweeps!r} is not valid: {sweeps[first]!r} and {sweeps[twice]!r} are one sweep "
                                 f"(MLflow parent run {parents[twice]}); name each sweep once")  # fmt: skip
    for sweep, parent in zip(sweeps, parents):
        config, task = reader.sweep_config(parent), reader.sweep_task(parent)
        summary, frame, _ = reduce(reader.load_records(parent), task, config, reader.published(parent))
        label = f"{config.label(task.name)} ({parent[:8]})"
        verdicts.append(f"{label}: {summary['verdict_lines']['answer']}")
        headline = (task.headline.name, task.headline.metric)
        series += timeline_series(summary, frame, lambda res: (res["base_contrast"], res["metric"]) == headline,
                                  lambda res: label + ("" if res["primary"] else f" [{res['method']}]"))  # fmt: skip
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    page = render_html("Sweeps compared", ", ".join(sweeps), {"answer": "\n".join(verdicts) or "no sweep has a headline to draw", "facts": []},
                       [compare_figure(series)] if series else [], [])  # fmt: skip
    out.write_text(page)
    return out.resolve()


def timeline_series(summary: dict, frame: pl.DataFrame, keep, label) -> list[dict]:
    """compare_figure's series from one sweep's summary and timeline: each result `keep(res)` accepts, over the analysed
    checkpoints, named `label(res)` and with its call (and where it emerges)."""
    frame = frame.filter(pl.col("analysed"))
    out = []
    for key, res in summary["results"].items():
        if not keep(res) or key not in frame.columns:
            continue
        interval = res["emergence_interval"]
        call = res["claim"]["call"] + (f" after {interval['after_revision']}, by {interval['by_revision']}" if interval else "")
        out.append({"label": label(res), "metric": res["metric"], "steps": frame["step"].to_list(), "revisions": frame["revision"].to_list(),
                    "values": column(frame, key), "low": column(frame, f"{key}_ci_low"), "high": column(frame, f"{key}_ci_high"),
                    "call": call})  # fmt: skip
    return out
