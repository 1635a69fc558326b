"""A study's report: several training runs of one family (seeds, sizes) swept on one task, side by side.

Each run's own report is built first (build.build_report: its verdict, intervals and null, by the same rules as a
lone sweep); the study reads those summaries and says, for the headline contrast: which runs emerge and where, with
each run's 95% interval on the emergence step, the spread (median, range) over the runs that emerge, whether their
intervals tell the steps apart, which heads carry it in each run, and the defects met (revisions missing from a run,
identical weights across runs at one step). Drawn: the emergence steps as dots with intervals, and every run's
headline over training with its band, one panel per unit.
"""

from __future__ import annotations

import html
import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go

from pythia_sweep.report.build import Report, build_report
from pythia_sweep.report.compare import timeline_series
from pythia_sweep.report.plotting import PALETTE, StepAxis
from pythia_sweep.report.timeline_figures import compare_figure
from pythia_sweep.report.page import html_table, render_html
from pythia_sweep.stats import head_label
from pythia_sweep.tracking.reader import SweepReader

CALL_COLORS = {"emerges": "#2ca02c", "reversed": "#9467bd", "no emergence": "#7f7f7f", "cannot call": "#d62728"}


@dataclass
class StudyReport:
    folder: Path
    html_path: Path
    summary: dict  # summary.json: the study's numbers, one entry per run
    statement: str
    runs: list[Report]
    figures: list[go.Figure]  # as drawn on the page


def build_study_report(study: str, *, tracking_uri: str | None = None, reports_dir: str | Path = "reports") -> StudyReport:
    """Every sweep tagged with `study` reported on its own, then the study's page, summary.json and statement."""
    reader = SweepReader(tracking_uri)
    parents = reader.study_sweeps(study)
    reports = [build_report(parent, tracking_uri=reader.uri, reports_dir=reports_dir) for parent in parents]
    records = {parent: list(report.records) for parent, report in zip(parents, reports)}
    labels = short_names([r.summary["config"]["model"] for r in reports])
    runs = [run_entry(label, report) for label, report in zip(labels, reports)]
    summary = {
        "study": study, "task": reports[0].summary["task"], "headline": reports[0].summary["headline"], "runs": runs,
        "spread": spread(runs), "identical_across_runs": identical_across_runs(records, dict(zip(parents, labels))),
    }  # fmt: skip
    summary["statement"] = statement(summary)
    folder = Path(reports_dir) / f"study-{study}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    figures = [emergence_figure(runs, summary)]
    series = [one | {"color": PALETTE[i % len(PALETTE)]} for i, (label, report) in enumerate(zip(labels, reports))
              for one in timeline_series(report.summary, report.frame, lambda res: res["primary"],
                                         lambda res, label=label: f"{label} · {res['base_contrast']}")]  # fmt: skip
    if series:
        overlay = compare_figure(series, log_steps=log_steps(runs))
        overlay.update_layout(title=f"Each run's headline over training ({summary['headline']}; bands: 95% bootstrap intervals over prompts)")
        figures.append(overlay)
    rows = [{"run": r["label"], "model": r["model"], "call": r["call"], "emergence": r["emergence_revision"] or "-",
             "95% interval (steps)": _interval_words(r), "final value": f"{r['final_value']:+.3f}" if r["final_value"] is not None else "-",
             "top heads at emergence": ", ".join(r["top_heads"].get("emergence", [])) or "-",
             "top heads at the end": ", ".join(r["top_heads"].get("final", [])) or "-",
             "discovered": "; ".join(f"{g} = {', '.join(h)}" for g, h in r["discovered"].items()) or "-",
             "report": os.path.relpath(r["report"], folder)} for r in runs]  # fmt: skip
    page = render_html(f"Study {study}: {summary['task']['question']}", f"{len(runs)} training runs · task {summary['task']['name']} · "
                       f"headline {summary['headline']}", {"answer": summary["statement"], "facts": []}, figures,
                       [("Runs", html_table(rows, list(rows[0])))], links_html=run_links(runs, folder))  # fmt: skip
    html_path = folder / "study.html"
    html_path.write_text(page)
    return StudyReport(folder, html_path.resolve(), summary, summary["statement"], reports, figures)


def run_links(runs: list[dict], folder: Path) -> str:
    """Each run's own report, linked from the study's page (relative: the folder can be moved whole)."""
    links = (f'<a href="{html.escape(os.path.relpath(r["report"], folder))}">{html.escape(r["label"])}</a>' for r in runs)
    return "each run's own report (its verdict, null, figures and MLflow links): " + " · ".join(links)


def short_names(models: list[str]) -> list[str]:
    """Each model's name without what all of them share at the start (the org and family): seed1, seed2 ..."""
    if len(models) < 2:
        return list(models)
    prefix = os.path.commonprefix(models)
    cut = max(prefix.rfind(c) for c in "/-_") + 1 if any(c in prefix for c in "/-_") else 0
    return [m[cut:] or m for m in models]


def run_entry(label: str, report: Report) -> dict:
    """One run of the study as its own report states it: the headline's call, where it was first measured past the
    level, the span its verdict gives the crossing ((after, by]: prompts and the checkpoint grid), the final value,
    the heads that carry it, the revisions it lacks."""
    s = report.summary
    point, interval = s["emergence_point"], s["emergence_interval"] or {}
    heads = s.get("heads") or {}
    top = {which: top_heads(heads["maps"][which]) for which in ("emergence", "final") if which in heads.get("maps", {})}
    return {
        "label": label, "model": s["config"]["model"], "parent_run_id": s["parent_run_id"], "call": s["claim"]["call"],
        "reasons": [r["words"] for r in s["claim"]["reasons"]], "answer": s["verdict_lines"]["answer"],
        "emergence_revision": point["revision"] if point else None, "emergence_step": point["step"] if point else None,
        "after": interval.get("after"), "by": interval.get("by"), "after_revision": interval.get("after_revision"),
        "by_revision": interval.get("by_revision"), "share_crossing": interval.get("share_crossing"), "final_value": s["final_value"],
        "final_step": s["final_step"], "top_heads": top,
        "discovered": {g: [head_label(a, b) for a, b in h] for g, h in ((s.get("discovery") or {}).get("groups") or {}).items()},
        "failed_revisions": [f["revision"] for f in s["quality"]["failed_revisions"]], "report": str(report.html_path),
        "unpublished": [u["revision"] for u in s.get("asked_for_not_published", [])],
    }  # fmt: skip


def top_heads(attribution: list[list[float]], k: int = 3, share: float = 0.25) -> list[str]:
    """The heads of a layer x head map that matter most: up to k by size, each at least `share` of the largest."""
    cells = sorted(((abs(v), layer, head) for layer, row in enumerate(attribution) for head, v in enumerate(row)), reverse=True)
    largest = cells[0][0] if cells else 0.0
    return [head_label(layer, head) for size, layer, head in cells[:k] if largest > 0 and size >= share * largest]


def spread(runs: list[dict]) -> dict:
    """The emergence steps of the runs whose emergence is called: median and range, and the pairs told apart. A run's
    first crossing lies in (after, by], its verdict's interval (prompt resamples widened by the checkpoint grid); two
    runs are apart when those spans do not meet."""
    called = [r for r in runs if r["call"] == "emerges"]
    steps = [r["emergence_step"] for r in called]

    def span(r: dict) -> tuple[float, float] | None:
        if r["by"] is None:
            return None  # some resamples never cross: no upper end
        return (r["after"] if r["after"] is not None else float("-inf"), r["by"])

    apart = [(a["label"], b["label"]) for i, a in enumerate(called) for b in called[i + 1 :]
             if span(a) and span(b) and (span(a)[1] <= span(b)[0] or span(b)[1] <= span(a)[0])]  # fmt: skip
    return {"runs_called": len(called), "runs": len(runs), "median_step": statistics.median(steps) if steps else None,
            "min_step": min(steps) if steps else None, "max_step": max(steps) if steps else None, "apart": apart}  # fmt: skip


def identical_across_runs(records: dict[str, list], labels: dict[str, str]) -> list[dict]:
    """Revisions of different runs holding byte-identical weight files (by the Hub's LFS sha256 digest): the same
    checkpoint published under several training runs (EleutherAI/pythia #203), so not independent runs there."""
    by_digest: dict[str, list[tuple[str, str]]] = {}
    for parent, recs in records.items():
        for r in recs:
            if r.weights_digest:
                by_digest.setdefault(r.weights_digest, []).append((labels[parent], r.revision))
    out = []
    for digest, members in by_digest.items():
        if len({label for label, _ in members}) > 1:
            out.append({"weights_digest": digest, "members": [{"run": label, "revision": rev} for label, rev in sorted(set(members))]})
    return sorted(out, key=lambda d: d["members"][0]["revision"])


def statement(summary: dict) -> str:
    """The study in words, claims first and only those each run's own verdict makes."""
    runs, sp = summary["runs"], summary["spread"]
    called = [r for r in runs if r["call"] == "emerges"]
    parts = []
    if called:
        steps = ", ".join(f"{r['label']} at {r['emergence_revision']} (95%: {_interval_words(r)})" for r in called)
        parts.append(f"{len(called)} of {len(runs)} runs emerge: {steps}.")
        if len(called) > 1:
            parts.append(f"Over those {len(called)}: median step {sp['median_step']:g}, range {sp['min_step']:,} to {sp['max_step']:,}.")
            if sp["apart"]:
                pairs = "; ".join(f"{a} and {b}" for a, b in sp["apart"])
                parts.append(f"Told apart (their 95% intervals over prompts and the checkpoint grid do not meet): {pairs}.")
            else:
                parts.append("No two are told apart: their 95% intervals over prompts and the checkpoint grid all meet.")
    else:
        parts.append(f"No run's emergence can be called ({len(runs)} runs).")
    for r in runs:
        if r["call"] in ("cannot call", "reversed"):
            parts.append(f"{r['label']}: {r['answer']}")
    quiet = [r["label"] for r in runs if r["call"] == "no emergence"]
    if quiet:
        parts.append(f"No emergence in {', '.join(quiet)}.")
    heads = [(r["label"], r["top_heads"].get("final")) for r in runs if r["top_heads"].get("final")]
    if heads:
        shared = [h for h in heads[0][1] if all(h in top for _, top in heads)]
        if len({frozenset(top) for _, top in heads}) == 1:
            parts.append(f"The same heads are on top of every run's map at the end: {', '.join(heads[0][1])}.")
        else:
            parts.append("On top of each run's map at the end: " + "; ".join(f"{label} {', '.join(top)}" for label, top in heads)
                         + (f" (in every one: {', '.join(shared)})." if shared else " (none in all of them)."))  # fmt: skip
    for r in runs:
        if r["failed_revisions"]:
            parts.append(f"{r['label']} lacks {', '.join(r['failed_revisions'])} (failed, left out).")
        if r["unpublished"]:
            parts.append(f"{r['label']} lacks {', '.join(r['unpublished'])} (asked for, not published).")
    for twin in summary["identical_across_runs"]:
        members = " = ".join(f"{m['run']} {m['revision']}" for m in twin["members"])
        parts.append(f"Identical weights across runs: {members} (the same files: not independent runs there).")
    return " ".join(parts)


def _interval_words(run: dict) -> str:
    if run["by"] is None:
        return "-"
    return (f"after {run['after_revision']}, " if run["after"] is not None else "") + f"by {run['by_revision']}"


def log_steps(runs: list[dict]) -> bool:
    """Training steps on a log axis where training runs long (plotting.StepAxis, on the longest run)."""
    return StepAxis.for_final_step(max((r["final_step"] or 0) for r in runs)).log


def emergence_figure(runs: list[dict], summary: dict) -> go.Figure:
    """Each run's emergence step as a dot with its 95% interval (a bar), colored by its call; a run with no crossing
    is a cross at its final step. The spread's median is a vertical line."""
    fig = go.Figure()
    for call, color in CALL_COLORS.items():
        these = [r for r in runs if r["call"] == call]
        crossed = [r for r in these if r["emergence_step"] is not None]
        if crossed:
            steps = [r["emergence_step"] for r in crossed]
            high = [(r["by"] if r["by"] is not None else r["final_step"]) - s for r, s in zip(crossed, steps)]
            low = [s - (r["after"] if r["after"] is not None else s) for r, s in zip(crossed, steps)]
            fig.add_trace(go.Scatter(
                x=steps, y=[r["label"] for r in crossed], mode="markers", name=f"{call}: first past the strong level; bar: the verdict's 95% interval (prompts and checkpoint grid)",
                marker={"color": color, "size": 11}, error_x={"type": "data", "symmetric": False, "array": high, "arrayminus": low, "thickness": 2},
                text=[f"{r['emergence_revision']}; 95%: {_interval_words(r)}" for r in crossed], hovertemplate="%{y}: %{text}<extra></extra>",
            ))  # fmt: skip
        never = [r for r in these if r["emergence_step"] is None]
        if never:
            fig.add_trace(go.Scatter(x=[r["final_step"] for r in never], y=[r["label"] for r in never], mode="markers",
                                     name=f"{call}: never above the strong level (drawn at its final step)",
                                     marker={"color": color, "size": 11, "symbol": "x"}, hovertemplate="%{y}: no crossing<extra></extra>"))  # fmt: skip
    median = summary["spread"]["median_step"]
    if median is not None:
        fig.add_vline(x=median, line={"dash": "dot", "color": PALETTE[0]}, annotation_text=f"median {median:g}")
    fig.update_layout(title=f"Where each run's headline first passes its strong level ({summary['headline']}), with the step's 95% "
                            "interval over prompt resamples and the checkpoint grid", template="plotly_white", height=220 + 40 * len(runs),
                      xaxis={"title": "training step", "type": "log" if log_steps(runs) else "linear"},
                      yaxis={"title": "training run", "autorange": "reversed"},
                      legend={"orientation": "h", "y": -0.25})  # fmt: skip
    return fig
