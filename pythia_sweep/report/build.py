"""Build a sweep's report from the tracking store: read its records, reduce, draw, write parquet, JSON and HTML, and
log the summary back to the sweep's parent run with the links to look at it in MLflow. Pages that are not one
sweep's report are built beside it: report/compare.py, scan_page.py and circuits_page.py."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pythia_sweep.hub.revisions import Checkpoint
from pythia_sweep.config import SweepConfig
from pythia_sweep.records import CheckpointRecord
from pythia_sweep.report.circuit_figures import circuit_figures, circuit_graph_figure
from pythia_sweep.report.head_figures import evidence_figures, head_map_figures, heatmap_figure
from pythia_sweep.report.page import html_table, context_tables, render_html
from pythia_sweep.report.plotting import StepAxis, colors_for
from pythia_sweep.report.reduce import drawn_conditions, reduce
from pythia_sweep.report.timeline_figures import detail_figure, headline_figure, rates_figure
from pythia_sweep.tracking.links import experiment_name
from pythia_sweep.tracking.reader import SweepReader
from pythia_sweep.tracking.store import StoreKind, TrackingStoreError, project_store_uri, store_kind
from pythia_sweep.tracking.writer import SweepRecorder


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
    records: tuple[CheckpointRecord, ...] = ()  # the records it was built from, as read (a study and refine read them again from here)

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
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    shown = drawn_conditions(records)
    colors = colors_for(shown)
    axis = StepAxis.for_final_step(final_step)
    figures = [f for f in (headline_figure(frame, summary, task), rates_figure(frame, shown, colors, axis),
                           detail_figure(frame, summary, task, colors), heatmap_figure(frame, long)) if f]  # fmt: skip
    figures += evidence_figures(frame, long, summary)
    figures += head_map_figures(summary)
    if summary.get("circuit"):  # the circuits over training, and the emergence checkpoint's and the final one as graphs
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
    return Report(folder, html_path.resolve(), summary, summary["verdict"], frame, long, links, logged, tuple(records))


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


def report_folder(model: str, task_name: str) -> str:
    """reports/<model>__<task>/: one folder per experiment, a path without the experiment name's spaces."""
    return f"{model.replace('/', '__')}__{task_name}"


