"""How the report is built: a sweep's records -> a polars timeline -> analysis -> parquet, JSON and one HTML page.

The reducer reads every checkpoint record of a sweep (finished or partial) back from MLflow, keeps one per
checkpoint, and orders them by training step. Revisions with identical weights (a public checkpoint served
twice) are flagged and left out of emergence detection, as are failed ones. The page is self-contained
(plotly.js embedded) so it opens offline.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go
import polars as pl
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from pythia_sweep import analysis
from pythia_sweep.config import SweepConfig
from pythia_sweep.tracking import Tracker, experiment_name

RATE_CONDITIONS = ("baseline", "clean", "even", "odd", "all")
COLORS = {"baseline": "#7f7f7f", "clean": "#2ca02c", "even": "#1f77b4", "odd": "#d62728", "all": "#9467bd", "upstream": "#ff7f0e"}


def _get(d: dict | None, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d or d[k] is None:
            return default
        d = d[k]
    return d


def timeline(records: list[dict], final_step: int | None = None) -> pl.DataFrame:
    """One row per checkpoint, ordered by step: status, hashes, strength and every rate with its interval."""
    rows = []
    digests = [r.get("weights_digest") for r in records]
    duplicates = {rev: group for group in analysis.duplicate_groups([r["revision"] for r in records], digests) for rev in group}
    last = final_step or max((r["step"] for r in records if r.get("step") is not None), default=None)
    for r in records:
        strengths = r.get("strength") or {}
        primary = next(iter(strengths), "per-head")
        main = strengths.get(primary, {})
        upstream = strengths.get("upstream", {}) if primary != "upstream" else {}  # the second method, if run
        main_ci, upstream_ci = main.get("strength_ci") or [None, None], upstream.get("strength_ci") or [None, None]
        row = {
            "revision": r["revision"],
            "step": r.get("step"),
            "fraction": (r["step"] / last) if last and r.get("step") is not None else None,
            "status": r.get("status"),
            "error": r.get("error"),
            "commit": r.get("commit"),
            "weights_digest": r.get("weights_digest"),
            "duplicate_of": ", ".join(x for x in duplicates.get(r["revision"], []) if x != r["revision"]) or None,
            "n_prompts": _get(r, "conditions", "even", "n_prompts"),
            "strength": main.get("strength"),
            "strength_ci_low": main_ci[0],
            "strength_ci_high": main_ci[1],
            "logprob_strength": main.get("logprob_strength"),
            "upstream_strength": upstream.get("strength"),
            "upstream_strength_ci_low": upstream_ci[0],
            "upstream_strength_ci_high": upstream_ci[1],
            "null_q05": _get(r, "null", "success_q05"),
            "null_q95": _get(r, "null", "success_q95"),
            "null_logprob_q05": _get(r, "null", "logprob_q05"),
            "null_logprob_q95": _get(r, "null", "logprob_q95"),
            "even_null_p": _get(r, "null", "even_success", "p_value"),
            "even_null_logprob_p": _get(r, "null", "even_logprob", "p_value"),
            "odd_null_p": _get(r, "null", "odd_success", "p_value"),
        }
        for name in RATE_CONDITIONS:
            c = _get(r, "conditions", name) or {}
            ci = c.get("success_ci") or [None, None]
            lci = c.get("logprob_diff_ci") or [None, None]
            row |= {
                f"{name}_rate": c.get("success_rate"), f"{name}_ci_low": ci[0], f"{name}_ci_high": ci[1],
                f"{name}_logprob": c.get("logprob_diff"), f"{name}_logprob_ci_low": lci[0], f"{name}_logprob_ci_high": lci[1],
            }  # fmt: skip
        for h in range(_get(r, "settings", "n_heads", default=0)):
            row[f"head{h:02d}_rate"] = _get(r, "conditions", f"head{h:02d}", "success_rate")
            row[f"head{h:02d}_logprob"] = _get(r, "conditions", f"head{h:02d}", "logprob_diff")
        rows.append(row)
    frame = pl.DataFrame(rows, infer_schema_length=None)
    return frame.sort("step", nulls_last=True) if len(frame) else frame


def summarize(frame: pl.DataFrame, final_step: int | None) -> dict:
    """Everything the analysis plan asks for, machine-readable."""
    failed = frame.filter(pl.col("status") != "ok")
    usable = frame.filter((pl.col("status") == "ok") & pl.col("duplicate_of").is_null() & pl.col("step").is_not_null())
    steps, strengths = usable["step"].to_list(), usable["strength"].to_list()
    i = analysis.emergence_index(strengths)
    final_step = final_step or (max(steps) if steps else None)
    point = None
    if i is not None:
        point = {
            "revision": usable["revision"][i],
            "step": steps[i],
            "fraction": steps[i] / final_step if final_step else None,
            "strength": strengths[i],
            "strength_ci": [usable["strength_ci_low"][i], usable["strength_ci_high"][i]],
            "previous_revision": usable["revision"][i - 1] if i > 0 else None,
        }
    kind = analysis.emergence_type(point["fraction"] if point else None)
    final = usable.tail(1).to_dicts()[0] if len(usable) else None
    first = usable.head(1).to_dicts()[0] if len(usable) else None
    wide = [
        r["revision"] for r in usable.to_dicts() if analysis.interval_too_wide(r["strength_ci_low"], r["strength_ci_high"])
    ]
    duplicates = analysis.duplicate_groups(frame["revision"].to_list(), frame["weights_digest"].to_list())
    summary = {
        "checkpoints": len(frame),
        "usable_checkpoints": len(usable),
        "final_step": final_step,
        "emergence_point": point,
        "emergence_type": kind,
        "hypothesis": analysis.hypothesis(kind),
        "final_strength": final["strength"] if final else None,
        "final_class": analysis.strength_class(final["strength"]) if final else None,
        "shape": analysis.rise_shape(strengths),
        "monotonic": analysis.is_monotonic(strengths),
        "events": analysis.crossing_events(steps, strengths),
        "quality": {
            "final_shows_known_result": bool(final and final["strength"] > analysis.STRONG),
            "earliest_shows_none": bool(first and abs(first["strength"]) <= analysis.WEAK),
            "failed_revisions": [{"revision": r, "error": e} for r, e in zip(failed["revision"], failed["error"])],
            "duplicate_revisions": duplicates,
            "intervals_too_wide": wide,
        },
        "even_beats_null_at_final": bool(final and final.get("even_null_p") is not None and final["even_null_p"] <= 0.05),
    }
    summary["verdict"] = verdict(summary, frame)
    return summary


def verdict(summary: dict, frame: pl.DataFrame) -> str:
    """A short plain-language answer, with the caveats that matter."""
    point = summary["emergence_point"]
    parts = []
    q = summary["quality"]
    caveats = []
    if q["failed_revisions"]:
        caveats.append(f"{len(q['failed_revisions'])} revisions failed: " + ", ".join(f["revision"] for f in q["failed_revisions"]) + ".")
    if q["duplicate_revisions"]:
        caveats.append("Identical weights: " + "; ".join(" = ".join(g) for g in q["duplicate_revisions"]) + " (left out).")
    if summary["usable_checkpoints"] == 0:
        return " ".join(["No usable checkpoint: every revision failed or was a duplicate; nothing can be said.", *caveats])
    if point:
        parts.append(
            f"Even-head specialization emerges at {point['revision']} (step {point['step']:,}, "
            f"{100 * point['fraction']:.1f}% of training): {summary['emergence_type']} emergence, "
            f"{summary['shape']['shape']} rise; {summary['hypothesis']}."
        )
    else:
        parts.append(
            f"No emergence: strength never exceeds 0.5 (final {summary['final_strength']:+.2f}, "
            f"{summary['final_class']})."
        )
    if not summary["monotonic"]:
        parts.append("It is not monotonic: " + ", ".join(f"{e['event']} at step {e['step']:,}" for e in summary["events"]) + ".")
    if summary["even_beats_null_at_final"]:
        parts.append("At the final checkpoint the even heads stand out of the random-subset null (p <= 0.05).")
    elif "null_q05" in frame.columns and frame["null_q05"].is_not_null().any():
        parts.append("At the final checkpoint the even heads do not stand out of the random-subset null.")
    if q["intervals_too_wide"]:
        parts.append(
            f"Intervals are too wide to call it at {len(q['intervals_too_wide'])} of {summary['usable_checkpoints']} "
            "checkpoints (strength interval wider than 0.5 or missing: too few distinct prompts)."
        )
    return " ".join(parts + caveats)


# -- figures ---------------------------------------------------------------------------------------------
def _x(frame: pl.DataFrame) -> list[float]:
    return [max(s, 1) for s in frame["step"].to_list()]  # step 0 drawn at 1 on the log axis


def _band(fig, x, low, high, color, name, row=None, col=None, opacity=0.18):
    pairs = [(a, lo, hi) for a, lo, hi in zip(x, low, high) if lo is not None and hi is not None]
    if not pairs:
        return
    xs, lows, highs = zip(*pairs)
    kw = {"row": row, "col": col} if row else {}
    fig.add_trace(go.Scatter(x=list(xs), y=list(highs), mode="lines", line={"width": 0}, showlegend=False, hoverinfo="skip"), **kw)
    fig.add_trace(
        go.Scatter(x=list(xs), y=list(lows), mode="lines", line={"width": 0}, fill="tonexty", name=name,
                   fillcolor=_rgba(color, opacity), hoverinfo="skip"), **kw,
    )  # fmt: skip


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def strength_figure(frame: pl.DataFrame, summary: dict) -> go.Figure:
    ok = frame.filter(pl.col("status") == "ok")
    x = _x(ok)
    fig = go.Figure()
    _band(fig, x, ok["strength_ci_low"].to_list(), ok["strength_ci_high"].to_list(), COLORS["even"], "95% bootstrap interval")
    fig.add_trace(go.Scatter(x=x, y=ok["strength"].to_list(), mode="lines+markers", name="strength (per-head)",
                             line={"color": COLORS["even"], "width": 3}, text=ok["revision"].to_list(),
                             hovertemplate="%{text}<br>strength %{y:.2f}<extra></extra>"))  # fmt: skip
    if ok["upstream_strength"].is_not_null().any():
        _band(fig, x, ok["upstream_strength_ci_low"].to_list(), ok["upstream_strength_ci_high"].to_list(), COLORS["upstream"], "upstream interval", opacity=0.12)
        fig.add_trace(go.Scatter(x=x, y=ok["upstream_strength"].to_list(), mode="lines+markers", name="strength (upstream method)",
                                 line={"color": COLORS["upstream"], "dash": "dot"}, text=ok["revision"].to_list(),
                                 hovertemplate="%{text}<br>upstream %{y:.2f}<extra></extra>"))  # fmt: skip
    dup = ok.filter(pl.col("duplicate_of").is_not_null())
    if len(dup):
        fig.add_trace(go.Scatter(x=_x(dup), y=dup["strength"].to_list(), mode="markers", name="duplicate weights (excluded)",
                                 marker={"symbol": "x", "size": 12, "color": "black"}))  # fmt: skip
    for level, name in ((0.5, "strong"), (0.3, "moderate"), (0.1, "weak")):
        fig.add_hline(y=level, line={"dash": "dash", "color": "#999", "width": 1}, annotation_text=name, annotation_position="right")
        fig.add_hline(y=-level, line={"dash": "dash", "color": "#ccc", "width": 1})
    point = summary["emergence_point"]
    if point:
        fig.add_vline(x=max(point["step"], 1), line={"color": "#2ca02c", "width": 2}, annotation_text=f"emergence: {point['revision']}")
    fig.update_layout(title="Specialization strength (even success - odd success) over training", template="plotly_white",
                      xaxis={"type": "log", "title": "training step (log; step 0 drawn at 1)"},
                      yaxis={"title": "strength", "range": [-1.05, 1.05]}, height=460, legend={"orientation": "h", "y": -0.2})  # fmt: skip
    return fig


def rates_figure(frame: pl.DataFrame) -> go.Figure:
    ok = frame.filter(pl.col("status") == "ok")
    x = _x(ok)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Success rate (check_bug_fixed), Wilson 95%", "Answer log-prob difference log p(correct) - log p(buggy), bootstrap 95%"))
    if ok["null_q05"].is_not_null().any():
        _band(fig, x, ok["null_q05"].to_list(), ok["null_q95"].to_list(), "#444444", "null: random head subsets (5-95%)", row=1, col=1, opacity=0.12)
        _band(fig, x, ok["null_logprob_q05"].to_list(), ok["null_logprob_q95"].to_list(), "#444444", "null (log-prob)", row=1, col=2, opacity=0.12)
    for name in RATE_CONDITIONS:
        if ok[f"{name}_rate"].is_null().all():
            continue
        rate, low, high = ok[f"{name}_rate"].to_list(), ok[f"{name}_ci_low"].to_list(), ok[f"{name}_ci_high"].to_list()
        fig.add_trace(go.Scatter(
            x=x, y=rate, mode="lines+markers", name=name, legendgroup=name, line={"color": COLORS[name]},
            error_y={"type": "data", "symmetric": False, "array": [h - r for h, r in zip(high, rate)],
                     "arrayminus": [r - lo for r, lo in zip(rate, low)], "thickness": 1},
        ), row=1, col=1)  # fmt: skip
        lp, llo, lhi = ok[f"{name}_logprob"].to_list(), ok[f"{name}_logprob_ci_low"].to_list(), ok[f"{name}_logprob_ci_high"].to_list()
        _band(fig, x, llo, lhi, COLORS[name], f"{name} interval", row=1, col=2, opacity=0.12)
        fig.add_trace(go.Scatter(x=x, y=lp, mode="lines+markers", name=name, legendgroup=name, showlegend=False,
                                 line={"color": COLORS[name]}), row=1, col=2)  # fmt: skip
    fig.update_xaxes(type="log", title="training step (log)")
    fig.update_yaxes(title="success rate", range=[-0.05, 1.05], row=1, col=1)
    fig.update_yaxes(title="log-prob difference (nats)", row=1, col=2)
    fig.update_layout(template="plotly_white", height=440, legend={"orientation": "h", "y": -0.25})
    return fig


def detail_figure(frame: pl.DataFrame, summary: dict) -> go.Figure | None:
    point = summary["emergence_point"]
    ok = frame.filter((pl.col("status") == "ok") & pl.col("duplicate_of").is_null())
    if not point or not len(ok):
        return None
    i = ok["revision"].to_list().index(point["revision"])
    near = ok.slice(max(i - 3, 0), 7)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=near["revision"].to_list(), y=near["strength"].to_list(), name="strength",
                         marker_color=[COLORS["clean"] if r == point["revision"] else COLORS["even"] for r in near["revision"]],
                         error_y={"type": "data", "symmetric": False,
                                  "array": [(h or s) - s for h, s in zip(near["strength_ci_high"], near["strength"])],
                                  "arrayminus": [s - (lo or s) for lo, s in zip(near["strength_ci_low"], near["strength"])]}))  # fmt: skip
    for name in ("even", "odd", "baseline"):
        fig.add_trace(go.Scatter(x=near["revision"].to_list(), y=near[f"{name}_logprob"].to_list(), mode="lines+markers",
                                 name=f"{name} log-prob diff", line={"color": COLORS[name]}), secondary_y=True)  # fmt: skip
    fig.add_hline(y=0.5, line={"dash": "dash", "color": "#999"})
    fig.update_layout(title=f"Around the emergence point ({point['revision']})", template="plotly_white", height=400)
    fig.update_yaxes(title="strength", secondary_y=False)
    fig.update_yaxes(title="log-prob difference", secondary_y=True)
    return fig


def heatmap_figure(frame: pl.DataFrame) -> go.Figure | None:
    ok = frame.filter(pl.col("status") == "ok")
    heads = sorted(c.removesuffix("_logprob") for c in ok.columns if c.startswith("head") and c.endswith("_logprob"))
    if not heads or ok.select(heads[0] + "_logprob").null_count().item() == len(ok):
        return None
    baseline = ok["baseline_logprob"].to_list()
    z = [[(v - b) if v is not None and b is not None else None for v, b in zip(ok[f"{h}_logprob"].to_list(), baseline)] for h in heads]
    rates = [[ok[f"{h}_rate"][j] for j in range(len(ok))] for h in heads]
    lim = max((abs(v) for row in z for v in row if v is not None), default=1.0) or 1.0
    fig = go.Figure(go.Heatmap(
        z=z, x=ok["revision"].to_list(), y=[h.replace("head", "head ") for h in heads], colorscale="RdBu", zmid=0,
        zmin=-lim, zmax=lim, customdata=rates, colorbar={"title": "Δ log-prob<br>vs baseline"},
        hovertemplate="%{y} at %{x}<br>Δ log-prob %{z:.3f}<br>success rate %{customdata:.2f}<extra></extra>",
    ))  # fmt: skip
    fig.update_layout(title="Each head of the layer patched alone: change in answer log-prob difference over the buggy baseline",
                      template="plotly_white", height=460, xaxis={"title": "checkpoint"})  # fmt: skip
    return fig


def _table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "<p>None.</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(title: str, subtitle: str, verdict_text: str, figures: list[go.Figure], tables: list[tuple[str, str]]) -> str:
    """One self-contained page: plotly.js inlined once, then each figure."""
    divs = "".join(f'<section>{f.to_html(full_html=False, include_plotlyjs=False)}</section>' for f in figures)
    tabs = "".join(f"<section><h2>{html.escape(t)}</h2>{body}</section>" for t, body in tables)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }}
.verdict {{ background: #f3f7fb; border-left: 4px solid #1f77b4; padding: 0.8em 1.2em; font-size: 1.1em; }}
table {{ border-collapse: collapse; font-size: 0.9em; }} td, th {{ border: 1px solid #ddd; padding: 4px 8px; text-align: left; }}
section {{ margin: 2em 0; }} .sub {{ color: #666; }}
</style>
<script type="text/javascript">{get_plotlyjs()}</script></head>
<body><h1>{html.escape(title)}</h1><p class="sub">{html.escape(subtitle)}</p>
<p class="verdict">{html.escape(verdict_text)}</p>{divs}{tabs}</body></html>"""


@dataclass
class Report:
    folder: Path
    html_path: Path
    summary: dict
    verdict: str
    frame: pl.DataFrame


def build_report(
    sweep: str | None = None,
    *,
    tracking_uri: str | None = None,
    reports_dir: str | Path = "reports",
    final_step: int | None = None,
    log_to_mlflow: bool = True,
) -> Report:
    """Reduce a sweep (parent run id or name; default the latest) to parquet, JSON and HTML."""
    tracker = Tracker(tracking_uri)
    parent = tracker.find_sweep(sweep)
    config = tracker.sweep_config(parent)
    records = tracker.load_records(parent)
    frame = timeline(records, final_step)
    final_step = final_step or _published_final_step(config) or (frame["step"].max() if len(frame) else None)
    if final_step is not None and len(frame):
        frame = frame.with_columns((pl.col("step") / final_step).alias("fraction"))
    summary = summarize(frame, final_step)
    summary |= {"sweep": parent, "config": config.to_dict(), "experiment": experiment_name(config.model, config.layer)}
    folder = Path(reports_dir) / _safe(summary["experiment"]) / parent
    folder.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(folder / "results.parquet")
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
    figures = [f for f in (strength_figure(frame, summary), rates_figure(frame), detail_figure(frame, summary), heatmap_figure(frame)) if f]
    problems = [{"revision": f["revision"], "problem": f["error"]} for f in summary["quality"]["failed_revisions"]]
    problems += [{"revision": " = ".join(g), "problem": "identical weight files (excluded from emergence detection)"} for g in summary["quality"]["duplicate_revisions"]]
    checkpoints = frame.select("revision", "step", "status", "strength", "strength_ci_low", "strength_ci_high", "even_rate", "odd_rate", "baseline_rate", "clean_rate").to_dicts()
    for row in checkpoints:
        for k, v in row.items():
            if isinstance(v, float):
                row[k] = f"{v:+.3f}" if "strength" in k else f"{v:.3f}"
    page = render_html(
        f"{config.model}, layer {config.layer}: when do even heads fix the 9.8 vs 9.11 bug?",
        f"sweep {parent} · {config.preset} prompts · method {config.method} · {len(frame)} checkpoints · final step {final_step}",
        summary["verdict"],
        figures,
        [("Failed or duplicate revisions", _table(problems, ["revision", "problem"])),
         ("Checkpoints", _table(checkpoints, list(checkpoints[0]) if checkpoints else []))],
    )  # fmt: skip
    html_path = folder / "report.html"
    html_path.write_text(page)
    if log_to_mlflow:
        tracker.log_report(parent, folder)
        metrics = {"final_strength": summary["final_strength"], "usable_checkpoints": summary["usable_checkpoints"]}
        if summary["emergence_point"]:
            metrics["emergence_step"] = summary["emergence_point"]["step"]
            metrics["emergence_fraction"] = summary["emergence_point"]["fraction"]
        tracker.log_summary(parent, metrics, summary["verdict"])
    return Report(folder, html_path.resolve(), summary, summary["verdict"], frame)


def _published_final_step(config: SweepConfig) -> int | None:
    from pythia_sweep.checkpoints import published_revisions

    try:
        published = published_revisions(config.model)
    except Exception:  # noqa: BLE001 - offline and uncached: fall back to the last swept step
        return None
    return published[-1].step if published else None


def _safe(name: str) -> str:
    return name.replace("/", "__")


def _json_default(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def compare_sweeps(sweeps: list[str], *, tracking_uri: str | None = None, out: str | Path = "reports/compare.html") -> Path:
    """One page overlaying the strength timelines of several sweeps (each method of each sweep a line)."""
    tracker = Tracker(tracking_uri)
    fig = go.Figure()
    for sweep in sweeps:
        parent = tracker.find_sweep(sweep)
        config = tracker.sweep_config(parent)
        frame = timeline(tracker.load_records(parent)).filter(pl.col("status") == "ok")
        label = f"{config.label} ({parent[:8]})"
        fig.add_trace(go.Scatter(x=_x(frame), y=frame["strength"].to_list(), mode="lines+markers", name=label,
                                 text=frame["revision"].to_list()))  # fmt: skip
        if frame["upstream_strength"].is_not_null().any():
            fig.add_trace(go.Scatter(x=_x(frame), y=frame["upstream_strength"].to_list(), mode="lines+markers",
                                     name=f"{label}, upstream method", line={"dash": "dot"}))  # fmt: skip
    fig.add_hline(y=0.5, line={"dash": "dash", "color": "#999"}, annotation_text="strong")
    fig.update_layout(title="Specialization strength over training, sweeps compared", template="plotly_white",
                      xaxis={"type": "log", "title": "training step (log; step 0 drawn at 1)"},
                      yaxis={"title": "strength", "range": [-1.05, 1.05]}, height=520)  # fmt: skip
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html("Sweeps compared", ", ".join(sweeps), f"{len(sweeps)} sweeps overlaid.", [fig], []))
    return out.resolve()


def scan_page(rows: list[dict], title: str, stem: Path) -> Path:
    """The layer x head scan as a heatmap page (and a parquet of its rows)."""
    frame = pl.DataFrame(rows)
    baseline = frame.filter(pl.col("head") == -1)["logprob_diff"][0]
    heads = frame.filter(pl.col("head") >= 0).with_columns((pl.col("logprob_diff") - baseline).alias("delta"))
    layers = sorted(heads["layer"].unique().to_list())
    n_heads = heads["head"].max() + 1
    z = [[heads.filter((pl.col("layer") == layer) & (pl.col("head") == h))["delta"][0] for h in range(n_heads)] for layer in layers]
    lim = max(abs(v) for row in z for v in row) or 1.0
    fig = go.Figure(go.Heatmap(z=z, x=[f"head {h}" for h in range(n_heads)], y=[f"layer {layer}" for layer in layers],
                               colorscale="RdBu", zmid=0, zmin=-lim, zmax=lim, colorbar={"title": "Δ log-prob<br>vs baseline"}))  # fmt: skip
    fig.update_layout(title=f"Each head patched alone: {title}", template="plotly_white", height=120 + 40 * len(layers))
    stem.parent.mkdir(parents=True, exist_ok=True)
    heads.write_parquet(stem.with_suffix(".parquet"))
    path = stem.with_suffix(".html")
    path.write_text(render_html(f"Layer x head scan: {title}", f"buggy baseline log-prob difference {baseline:+.3f}",
                                "Blue: the head moves the answer toward the correct one; red: toward the buggy one.", [fig], []))  # fmt: skip
    return path.resolve()
