"""The report and the MLflow UI, looked at in a real browser (Debian's chromium, headless)."""

import json
from collections import defaultdict
import subprocess
import sys
import urllib.request
from pathlib import Path

import polars as pl
import pytest
import ray

from pythia_sweep.config import SweepConfig
from pythia_sweep.report.build import build_report
from pythia_sweep.report.compare import compare_sweeps
from pythia_sweep.run.driver import run_sweep
from pythia_sweep.tracking.reader import SweepReader as Tracker
from pythia_sweep.tracking.store import TrackingStoreError

from conftest import NEOX_REPO
from support.browser import FIGURES_JS, chromium
from support.servers import free_port, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def swept(hub_cache, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    uri = f"sqlite:///{tmp}/mlflow.db"
    config = SweepConfig(model=NEOX_REPO, checkpoints="all", task="tasks/decimal-seed.toml", method="both", null_subsets=4,
                         max_new_tokens=4, bootstrap_resamples=200)  # fmt: skip
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", object_store_memory=100 * 2**20)
    try:
        result = run_sweep(config, tracking_uri=uri, progress=False)
    finally:
        ray.shutdown()
    report = build_report(result.parent_run_id, tracking_uri=uri, reports_dir=tmp / "reports")
    return uri, result, report, tmp


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def test_report_outputs(swept):
    uri, result, report, _ = swept
    assert {p.name for p in report.folder.iterdir()} == {"results.parquet", "long.parquet", "summary.json", "report.html"}
    frame = pl.read_parquet(report.folder / "results.parquet")
    assert frame["revision"].to_list() == ["step0", "step1", "step2", "step4", "step1000"]
    summary = json.loads((report.folder / "summary.json").read_text())
    assert summary["final_step"] == 1000 and summary["verdict"] == report.verdict
    tracker = Tracker(uri)
    parent = tracker.client.get_run(result.parent_run_id)
    assert {"final/strength/success_rate", "final/upstream/strength/success_rate"} <= set(parent.data.metrics)
    assert parent.data.tags["mlflow.note.content"] == summary["verdict_markdown"]  # the whole verdict, as the run's description (markdown)
    assert set(summary["results"]) == {"strength/success_rate", "upstream/strength/success_rate"}  # both methods
    artifacts = {a.path for a in tracker.client.list_artifacts(result.parent_run_id, "report")}
    assert "report/report.html" in artifacts


def test_report_page_draws_its_plots_offline(swept, browser):
    _, _, report, tmp = swept
    page = browser.new_page(viewport={"width": 1280, "height": 2400})
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: errors.append(f"network request: {r.url}") if not r.url.startswith(("file:", "data:", "blob:")) else None)
    page.goto(report.html_path.as_uri())
    page.wait_for_selector(".plot-container .main-svg", timeout=30000)
    assert page.locator(".js-plotly-plot").count() >= 3  # strength, rates, heatmap (detail only with emergence)
    assert page.locator(".scatterlayer .trace").count() >= 6  # lines were really drawn
    assert page.locator(".heatmaplayer image, .heatmaplayer .hm").count() >= 1
    first, *facts = report.verdict.split("\n")
    assert page.inner_text(".verdict .answer") == first and len(first) <= 200  # the terminal's verdict, line for line
    assert [f"{dt}: {dd}" for dt, dd in zip(page.locator(".verdict dt").all_inner_texts(), page.locator(".verdict dd").all_inner_texts())] == facts
    body = page.inner_text("body")
    for section in ("The task's prompts", "Example generations at step1000", "Run config", "Package versions"):
        assert section in body
    assert "Which is bigger: 9.8 or 9.11?" in body and "none" not in page.inner_text(".verdict").split()
    shot = tmp / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    from PIL import Image

    image = Image.open(shot).convert("L")
    lo, hi = image.getextrema()
    assert hi - lo > 100 and len(image.getcolors(1 << 16) or []) > 50  # not a blank page
    assert errors == []


def is_line(t: dict) -> bool:
    """A scatter trace that draws a line or markers (a band's edges are lines of width 0: not lines)."""
    return t["type"] == "scatter" and t["visible"] is True and ("markers" in t["mode"] or ("lines" in t["mode"] and t["width"] > 0))


def is_band(t: dict) -> bool:
    return t["type"] == "scatter" and t["fill"] != "none" and not is_line(t)


def is_drawn(t: dict, traces: list[dict]) -> bool:
    """Whether the trace puts anything on the page: a line or markers, a bar or heatmap, or a band whose edges
    (this trace and the one before it on the same axes, which `tonexty` fills to) are apart somewhere."""
    if t["visible"] is not True:
        return False
    if t["type"] != "scatter":
        return True
    if is_band(t):
        edge = [o for o in traces[: traces.index(t)] if (o["xaxis"], o["yaxis"]) == (t["xaxis"], t["yaxis"])][-1]
        return any(a != b for a, b in zip(t["y"], edge["y"]))
    return is_line(t)


def test_report_lines_that_coincide_stay_apart_and_legends_name_only_what_is_drawn(swept, browser):
    """Issue 14, item 9: lines with the same values at every checkpoint are drawn one on top of another, so they
    must differ in dash or marker to be told apart; a legend entry must name something the reader can see (a
    line's interval band is named in its line's entry; only the null band has an entry of its own)."""
    _, _, report, _ = swept
    summary = json.loads((report.folder / "summary.json").read_text())
    page = browser.new_page(viewport={"width": 1280, "height": 2400})
    page.goto(report.html_path.as_uri())
    page.wait_for_selector(".plot-container .main-svg", timeout=30000)
    figures = page.evaluate(FIGURES_JS)

    coinciding = []
    for fig in figures:
        same_values = defaultdict(list)  # lines on the same axes with the same (x, y) at every point
        for t in filter(is_line, fig["traces"]):
            same_values[(t["xaxis"], t["yaxis"], json.dumps(t["x"]), json.dumps(t["y"]))].append(t)
        for lines in (group for group in same_values.values() if len(group) > 1):
            styles = [(t["dash"] if "lines" in t["mode"] else None, t["symbol"] if "markers" in t["mode"] else None) for t in lines]
            assert len(set(styles)) == len(styles), (fig["title"], [(t["name"], s) for t, s in zip(lines, styles)])
            coinciding.append([t["name"] for t in lines])

        assert len(set(fig["legend"])) == len(fig["legend"]), (fig["title"], fig["legend"])  # no entry twice
        for entry in fig["legend"]:
            own = next(t for t in fig["traces"] if t["name"] == entry and t["showlegend"])
            toggled = [t for t in fig["traces"] if t is own or (own["legendgroup"] and t["legendgroup"] == own["legendgroup"])]
            assert any(is_drawn(t, fig["traces"]) for t in toggled), (fig["title"], entry)  # it names something seen
        bands = [e for e in fig["legend"] if is_band(next(t for t in fig["traces"] if t["name"] == e and t["showlegend"]))]
        assert bands in ([], ["null: random head sets (5-95%)"]), (fig["title"], bands)

    # The tiny random models answer no prompt right: every success rate is 0 at every checkpoint, so the
    # headline's two methods coincide, and so do the rates of the five conditions. That is the case at stake.
    assert {"baseline", "clean", "even", "odd", "all"} in [set(names) for names in coinciding], coinciding

    # Legends bounded by what each figure draws: the rates, one entry per condition drawn and one for the null
    # band; the headline, one per method's line (its band named in it), one for the emergence mark and one
    # for duplicate weights, when drawn; the attention evidence, its three curves and the emergence mark.
    rates = next(f for f in figures if "Success rate" in f["title"])
    assert sorted(rates["legend"]) == sorted(["baseline", "clean", "even", "odd", "all", "null: random head sets (5-95%)"])
    headline = next(f for f in figures if f["title"].startswith("strength = even - odd"))
    lines = [k for k, r in summary["results"].items() if r["metric"] == "success_rate"]  # strength, upstream/strength
    marks = bool(summary["emergence_point"]) + bool(summary["quality"]["duplicate_revisions"])
    assert len(lines) == 2 and len(headline["legend"]) == len(lines) + marks, headline["legend"]
    evidence = next(f for f in figures if f["title"].startswith("Second line of evidence"))
    assert len(evidence["legend"]) == 3 + bool(summary["emergence_point"]), evidence["legend"]
    assert all(f["legend"] == [] for f in figures if f["title"].startswith("Each head"))  # heatmaps: a colour bar


def test_compare_page_overlays_sweeps(swept, browser):
    uri, result, _, tmp = swept
    with pytest.raises(TrackingStoreError, match="are one sweep"):  # named twice: refused, not drawn twice
        compare_sweeps([result.parent_run_id, result.parent_run_id], tracking_uri=uri, out=tmp / "compare.html")
    out = compare_sweeps([result.parent_run_id], tracking_uri=uri, out=tmp / "compare.html")
    page = browser.new_page()
    page.goto(out.as_uri())
    page.wait_for_selector(".main-svg", timeout=30000)
    assert page.locator(".scatterlayer .trace").count() == 2  # the sweep's per-head and upstream lines


def test_mlflow_ui_lists_parent_and_child_runs(swept, browser):
    uri, result, _, _ = swept
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    server = subprocess.Popen([str(mlflow), "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(f"{base}/health", server, timeout=90)
        tracker = Tracker(uri)
        parent = tracker.client.get_run(result.parent_run_id)
        exp = parent.info.experiment_id
        body = json.dumps({"experiment_ids": [exp], "max_results": 100}).encode()
        req = urllib.request.Request(f"{base}/api/2.0/mlflow/runs/search", data=body, headers={"Content-Type": "application/json"})
        runs = json.load(urllib.request.urlopen(req, timeout=10))["runs"]
        names = {r["info"]["run_name"] for r in runs}
        assert {parent.info.run_name, "step0000000", "step0001000"} <= names and len(runs) == 6
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{base}/#/experiments/{exp}/runs?workflowType=machine_learning")  # the UI's training-runs view
        page.wait_for_selector(f"text={parent.info.run_name}", timeout=60000)
        assert "5 matching runs" not in page.inner_text("body") and "6 matching runs" in page.inner_text("body")
        page.locator("[role=row]", has_text=parent.info.run_name).locator("button").first.click()  # expand the sweep
        page.wait_for_selector("text=step0001000", timeout=30000)  # its child runs are listed under it
        page.get_by_text("decimal-seed · tiny-test/neox").first.wait_for(timeout=30000)  # the experiment's name, task first (drawn after the rows)
        # the link the report prints: the checkpoints alone, sorted by training step (not completion order)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})  # a fresh load: the UI reads the URL's state then
        page.goto(tracker.checkpoints_url(result.parent_run_id, base))
        page.wait_for_selector("text=step0001000", timeout=60000)
        body = page.inner_text("body")
        steps = ["step0000000", "step0000001", "step0000002", "step0000004", "step0001000"]
        assert "5 matching runs" in body and parent.info.run_name not in body.split("matching runs")[-1], body[-2000:]
        assert [body.index(name) for name in steps] == sorted(body.index(name) for name in steps), body[-2000:]
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(tracker.run_url(result.parent_run_id, base))  # the parent run's charts against training step
        page.wait_for_selector("text=Model metrics", timeout=60000)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})  # the first link: the headline alone, against step
        page.goto(tracker.metric_url(result.parent_run_id, ["strength/success_rate", "strength/success_rate_ci_low"], base))
        page.wait_for_selector(".js-plotly-plot .scatterlayer .trace", timeout=60000)
        shown = page.inner_text("body")  # the chart's legend and the page's metric list: the headline's numbers alone
        assert "(strength/success_rate)" in shown and "baseline/" not in shown, shown[-1500:]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_report_examples_show_special_tokens(neox, browser, tmp_path):
    """Issue 23, item 4: a generation that is only `<|endoftext|>` reads as that token in the report's example
    generations (and in responses.txt), not as an empty string."""
    from dataclasses import replace

    from conftest import ending_at_once

    from pythia_sweep.measure.checkpoint import base_record, measure
    from pythia_sweep.measure.plan import compile_for
    from pythia_sweep.records import shown_text
    from pythia_sweep.report.page import context_tables, render_html
    from pythia_sweep.task.schema import load_task
    from pythia_sweep.records import responses_text

    config = SweepConfig(model=NEOX_REPO, task="tasks/decimal-seed.toml", null_subsets=0, max_new_tokens=4,
                         bootstrap_resamples=200, evidence=False)  # fmt: skip
    task = load_task(config.task)
    loaded = ending_at_once(neox)
    record = replace(base_record(config, task, "step1000"), status="ok", **measure(config, compile_for(config, task, loaded), loaded))
    assert {shown_text(r) for r in record.responses if r["response"] is not None} == {"'<|endoftext|>'"}
    path = tmp_path / "examples.html"
    path.write_text(render_html("examples", "", {"answer": "", "facts": []}, [], context_tables([record], task, config)))
    page = browser.new_page()
    page.goto(path.as_uri())
    table = page.locator("section", has_text="Example generations at step1000").inner_text()
    assert table.count("'<|endoftext|>'") == 4 and "''" not in table, table  # baseline, clean, even, odd of the one prompt
    assert "'<|endoftext|>'" in responses_text(record)
