"""Build a sweep's report from the tracking store: reduce, draw, write parquet, JSON and HTML, log the summary
back to the sweep's parent run; and the pages comparing sweeps and showing a layer x head scan."""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go
import polars as pl

from pythia_sweep.hub.revisions import Checkpoint
from pythia_sweep.config import SweepConfig
from pythia_sweep.report.figures import (
    StepAxis,
    colors_for,
    detail_figure,
    compare_figure,
    evidence_figures, head_map_figures,
    headline_figure,
    heatmap_figure,
    rates_figure,
)
from pythia_sweep.report.page import html_table, context_tables, render_html
from pythia_sweep.report.reduce import column, drawn_conditions, reduce
from pythia_sweep.tracking.reader import SweepReader
from pythia_sweep.tracking.writer import SweepRecorder
from pythia_sweep.tracking.store import StoreKind, TrackingStoreError, project_store_uri, store_kind
from pythia_sweep.tracking.links import experiment_name

MAKE_UI = "http://127.0.0.1:5000"  # what `make ui` serves: the project's own store (Makefile)


@dataclass
class Report:
    folder: Path
    html_path: Path
    summary: dict
    verdict: str
    frame: pl.DataFrame  # one row per checkpoint (results.parquet)
    long: pl.DataFrame  # one row per number (long.parquet, numbers.long_table)
    links: MlflowLinks  # where to look in the MLflow UI
    logged: bool = True  # written back to the sweep's parent run (not on a read-only store)

    @property
    def mlflow_link(self) -> str:
        """The links as the terminal prints them (whole URLs)."""
        return self.links.terminal()


def build_report(
    sweep: str | None = None,
    *,
    tracking_uri: str | None = None,
    reports_dir: str | Path = "reports",
    final_step: int | None = None,
    log_to_mlflow: bool = True,
) -> Report:
    """Reduce a sweep (parent run id, sweep_id or name; default the latest) to parquet, JSON and HTML. On a store this
    process cannot write (a read-only mlruns/), the report is still built, only not logged back (`Report.logged`)."""
    reader = SweepReader(tracking_uri)
    parent = reader.find_sweep(sweep)
    config = reader.sweep_config(parent)
    task = reader.sweep_task(parent)
    records = reader.load_records(parent)
    if not records:
        raise TrackingStoreError(f"MLflow parent run {parent} has no checkpoint records yet: run or resume its sweep first")
    published = reader.published(parent) or _published_now(config)
    summary, frame, long = reduce(records, task, config, published, final_step)
    summary |= {"parent_run_id": parent, "sweep_id": config.sweep_id(task.digest), "config": config.to_dict(),
                "experiment": experiment_name(config.model, task.name),
                "asked_for_not_published": reader.unpublished(parent)}  # fmt: skip
    final_step = summary["final_step"]
    folder = Path(reports_dir) / report_folder(config.model, task.name) / parent
    folder.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(folder / "results.parquet")
    long.write_parquet(folder / "long.parquet")
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
    shown = drawn_conditions(records)
    colors = colors_for(shown)
    axis = StepAxis.for_final_step(final_step)
    figures = [f for f in (headline_figure(frame, summary, task), rates_figure(frame, shown, colors, axis),
                           detail_figure(frame, summary, task, colors), heatmap_figure(frame, long)) if f]  # fmt: skip
    figures += evidence_figures(frame, long, summary)
    figures += head_map_figures(summary)
    if summary.get("circuit"):  # the circuits over training, and the emergence checkpoint's and the final one as graphs
        from pythia_sweep.report.figures import circuit_figures, circuit_graph_figure

        found = summary["circuit"]
        figures += circuit_figures(found["over_training"], found["circuits"], found["target"])
        shape = next(r.settings for r in records if r.ok)
        n_layers, n_heads = shape["n_layers"], shape["n_heads"]
        figures += [circuit_graph_figure(found["drawn"], n_layers, n_heads)] if found["drawn"] else []
    problems = [{"revision": r["revision"], "problem": r["excluded_because"]} for r in frame.filter(~pl.col("analysed")).iter_rows(named=True)]
    problems += [{"revision": u["revision"], "problem": f"asked for, not published ({u['nearest']}): not measured"}
                 for u in summary["asked_for_not_published"]]  # fmt: skip
    key = summary["headline"]
    columns = {"revision": "revision", "step": "step", "status": "status", key: task.headline.name,
               f"{key}_ci_low": "interval low", f"{key}_ci_high": "interval high",
               **{f"{n}/success_rate": f"{n}: success" for n in shown}}  # fmt: skip
    signed = {key, f"{key}_ci_low", f"{key}_ci_high"}  # the headline and its interval carry a sign; rates do not
    checkpoints = []
    for row in frame.select([c for c in columns if c in frame.columns]).to_dicts():
        checkpoints.append({columns[k]: (f"{v:+.3f}" if k in signed else f"{v:.3f}") if isinstance(v, float) else v for k, v in row.items()})
    links = mlflow_links(reader, parent, summary["headline"])
    subtitle = (f"{config.model} · task {task.name} ({task.source}) · sweep_id {summary['sweep_id']} · MLflow parent run {parent} · "
                f"method {config.method} · {len(frame)} checkpoints · final step {final_step}")  # fmt: skip
    page = render_html(
        f"{config.model}: {task.question}", subtitle, summary["verdict_lines"], figures, links_html=links.html(), tables=
        [("Failed or duplicate revisions", html_table(problems, ["revision", "problem"])),
         ("Checkpoints", html_table(checkpoints, list(checkpoints[0]) if checkpoints else [])),
         *context_tables(records, task, config)],
    )  # fmt: skip
    html_path = folder / "report.html"
    html_path.write_text(page)
    logged = log_to_mlflow and reader.writable()
    if logged:
        recorder = SweepRecorder(reader.uri)
        recorder.log_report(parent, folder)
        metrics = {f"final/{k}": res["final_value"] for k, res in summary["results"].items()}
        metrics["usable_checkpoints"] = summary["usable_checkpoints"]
        interval = summary["emergence_interval"]
        if interval:  # a called crossing only: a step the verdict does not claim is not charted as one
            metrics["emergence_step"] = summary["emergence_point"]["step"]
            metrics["emergence_fraction"] = summary["emergence_point"]["fraction"]
            metrics["emergence_after_step"], metrics["emergence_by_step"] = interval["after"], interval["by"]
            metrics["emergence_resamples_crossing"] = interval["share_crossing"]
        recorder.log_summary(parent, metrics, summary["verdict_markdown"])
        if summary.get("circuit"):  # the overlaps need the whole sweep: charted on the parent against step when it is read
            step_of = {r.revision: r.step for r in records}
            recorder.log_series(parent, {f"circuit/{key}": {step_of[c["revision"]]: c[key] for c in summary["circuit"]["over_training"]["checkpoints"]}
                                         for key in ("edges_vs_final", "nodes_vs_final", "edges_vs_previous", "nodes_vs_previous")})  # fmt: skip
    return Report(folder, html_path.resolve(), summary, summary["verdict"], frame, long, links, logged)


@dataclass(frozen=True)
class MlflowLinks:
    """Where to look in the MLflow UI: (name, url) pairs, and what to do first (`make ui`) or, without a UI
    address, where the run is."""

    links: tuple[tuple[str, str], ...]
    note: str

    def terminal(self) -> str:
        return f"MLflow{self.note}: " + " · ".join(f"{name} {url}" for name, url in self.links) if self.links else f"MLflow: {self.note}"

    def html(self) -> str:
        if not self.links:
            return html.escape(f"MLflow: {self.note}")
        anchors = " · ".join(f'<a href="{html.escape(url)}">{html.escape(name)}</a>' for name, url in self.links)
        return f"MLflow{html.escape(self.note)}: {anchors}"


def mlflow_links(reader: SweepReader, parent: str, headline_key: str | None = None) -> MlflowLinks:
    """The headline (with its interval) charted against training step, the sweep's checkpoint runs sorted by training
    step, and its parent run's charts against step; on the tracking server, or on `make ui` (MAKE_UI) for the
    project's own store."""
    served = store_kind(reader.uri) is StoreKind.SERVER
    ui = None if served else MAKE_UI if reader.uri == project_store_uri() else None
    if not served and ui is None:
        return MlflowLinks((), f"parent run {parent} in {reader.uri} (mlflow ui --backend-store-uri {reader.uri})")
    headline = [headline_key] + [f"{headline_key}_ci_{end}" for end in ("low", "high")] if headline_key else []
    first = (("headline against step", reader.metric_url(parent, headline, ui)),) if headline else ()
    return MlflowLinks(first + (("checkpoints by training step", reader.checkpoints_url(parent, ui)),
                                ("every number against step", reader.run_url(parent, ui))), "" if served else " (after make ui)")  # fmt: skip


def _published_now(config: SweepConfig) -> list[Checkpoint] | None:
    """The published revisions from the Hub (or the local cache offline), for a sweep saved without them."""
    from pythia_sweep.hub.revisions import published_revisions

    try:
        return published_revisions(config.model)
    except Exception:  # noqa: BLE001 - offline and uncached: final_step falls back to the last ok record
        return None


def _share(value: float | None) -> str:
    return "none here" if value is None else f"{value:.2f}"


def report_folder(model: str, task_name: str) -> str:
    """reports/<model>__<task>/: one folder per experiment, a path without the experiment name's spaces."""
    return f"{model.replace('/', '__')}__{task_name}"


def _json_default(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


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


def scan_page(scan, title: str, stem: Path) -> Path:
    """The layer x head scan (measure/scan.Scan) as a heatmap page of each head's effect (and a parquet of its rows)."""
    baseline = scan.baseline
    heads = pl.DataFrame(scan.heads).with_columns((pl.col("logprob_diff") - baseline).alias("delta"))
    fig = scan_figure(heads, title)
    stem.parent.mkdir(parents=True, exist_ok=True)
    heads.write_parquet(stem.with_suffix(".parquet"))
    path = stem.with_suffix(".html")
    path.write_text(render_html(f"Layer x head scan: {title}", f"corrupted baseline log-prob difference {baseline:+.3f}",
                                {"answer": "Blue: the head moves the answer toward the clean prompt's; red: away from it.", "facts": []},
                                [fig], []))  # fmt: skip
    return path.resolve()


def scan_figure(heads: pl.DataFrame, title: str) -> go.Figure:
    """Layers down, heads across, sized to the model: a row of at least 28 px per layer, every layer and head
    labelled, and a colour bar as tall as the map (a 2-layer scan is no longer a 200 px strip)."""
    layers = sorted(heads["layer"].unique().to_list())
    n_heads = heads["head"].max() + 1
    z = [[heads.filter((pl.col("layer") == layer) & (pl.col("head") == h))["delta"][0] for h in range(n_heads)] for layer in layers]
    lim = max(abs(v) for row in z for v in row) or 1.0
    y = [f"layer {layer}" for layer in layers]
    fig = go.Figure(go.Heatmap(z=z, x=[f"head {h}" for h in range(n_heads)], y=y, colorscale="RdBu", zmid=0, zmin=-lim, zmax=lim,
                               colorbar={"title": "Δ log-prob<br>vs baseline<br>(nats)", "len": 1.0, "thickness": 18},
                               hovertemplate="%{y}, %{x}<br>Δ log-prob %{z:.3f} nats<extra></extra>"))  # fmt: skip
    fig.update_layout(title=f"Each head patched alone: {title}", template="plotly_white",
                      height=max(420, 180 + 28 * len(layers)), width=max(640, 260 + 44 * n_heads),
                      yaxis={"tickmode": "array", "tickvals": y, "autorange": "reversed", "title": "layer"},
                      xaxis={"tickmode": "array", "tickvals": [f"head {h}" for h in range(n_heads)], "title": "head", "tickangle": -45})  # fmt: skip
    return fig


def circuits_page(revisions: list[str], circuits: list[dict], title: str, stem: Path, shape: tuple[int, int],
                  published: list[dict] | None = None) -> tuple[Path, dict]:  # fmt: skip
    """The circuits over training as a page (and circuits.json): the figures of figures.circuit_figures, the first and
    final circuits drawn as layered graphs (`shape`: the model's layers and heads), and the answer in one line with
    labelled facts, as a verdict is written."""
    from pythia_sweep.measure.circuits.over_training import over_training
    from pythia_sweep.report.figures import circuit_figures, circuit_graph_figure

    over = over_training(revisions, circuits)
    target = circuits[-1]["target"]
    found = [c for c in circuits if c["none"] is None]
    short = [c["revision"] for c in found if not c["reached"]]
    final = circuits[-1]
    if final["none"]:
        answer = f"No circuit at {revisions[-1]}: {final['none']}; nothing to find a circuit for in this task at the final checkpoint."
    else:
        answer = (f"The circuit at {revisions[-1]}: {final['size']} of {final['edges_possible']} edges, faithfulness "
                  f"{final['faithfulness']:.2f} by patching (target {target:g}); first found at {found[0]['revision']}.")  # fmt: skip
    first = found[0]["revision"] if found else None
    joined = [n for n in over["nodes"] if n["joins"] != first]
    left = [n for n in over["nodes"] if not n["at_final"]]
    alone = sorted(final["alone"].items(), key=lambda kv: -abs(kv[1]["nats"]))[:3]
    facts = [
        {"label": "final", "fact": "nodes " + ", ".join(final["nodes"]) if final["nodes"] else final["none"]},
        {"label": "edges alone", "fact": "; ".join(f"{k} patched alone {a['nats']:+.2f} nats ({a['share']:.0%} of the gap; attribution "
                                                   f"{final['scores'][k]:+.2f})" for k, a in alone) or "none"},  # fmt: skip
        {"label": "no circuit", "fact": "; ".join(f"{c['revision']} ({c['none']})"
                                                  for c in circuits if c["none"]) or "none: every checkpoint has a gap to explain"},  # fmt: skip
        {"label": "overlap with the final", "fact": "; ".join(f"{c['revision']} edges {c['edges_vs_final']:.2f}, nodes {c['nodes_vs_final']:.2f}"
                                                              for c in over["checkpoints"] if c["edges_vs_final"] is not None) or "none"},  # fmt: skip
        {"label": "joined later", "fact": ", ".join(f"{n['node']} at {n['joins']}" for n in joined) or "none"},
        {"label": "left", "fact": ", ".join(f"{n['node']} after {n['last_seen']}" for n in left) or "none"},
        {"label": "short of target", "fact": ", ".join(short) or "none: every circuit found reaches it"},
    ]
    if published is not None:  # circuits.against_published: beside Tigges et al.'s circuit of the same step
        facts.append({"label": "published (Tigges et al.)", "fact": "; ".join(
            f"{p['revision']}: edges {_share(p['edges'])}, nodes {_share(p['nodes'])} ({p['ours']} edges here, {p['theirs']} theirs "
            f"at this granularity)" for p in published)})  # fmt: skip
    stem.parent.mkdir(parents=True, exist_ok=True)
    summary = {"revisions": revisions, "circuits": circuits, "over_training": over, "answer": answer, "facts": facts, "published": published}
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=2, default=_json_default))
    path = stem.with_suffix(".html")
    drawn = list({id(c): c for c in (found[:1] + found[-1:])}.values())  # the first circuit found and the final one, as graphs
    figures = circuit_figures(over, circuits, target) + ([circuit_graph_figure(drawn, *shape)] if drawn else [])
    if published:
        from pythia_sweep.report.figures import published_overlap_figure

        figures.append(published_overlap_figure(published))
    path.write_text(render_html(f"Circuits over training: {title}", f"{len(revisions)} checkpoints", {"answer": answer, "facts": facts},
                                figures, []))  # fmt: skip
    return path.resolve(), summary
