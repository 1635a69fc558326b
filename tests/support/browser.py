"""Debian's chromium, headless, through playwright: how the tests look at the report and the MLflow UI."""

import contextlib
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic"]  # fmt: skip


@contextlib.contextmanager
def chromium():
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is required (apt-get install chromium; make test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def figures_of(browser, path: Path) -> list[dict]:
    """Every plotly figure of a page as the browser drew it (FIGURES_JS), after the page has drawn."""
    page = browser.new_page(viewport={"width": 1280, "height": 2000})
    page.goto(Path(path).as_uri())
    page.wait_for_selector(".plot-container .main-svg", timeout=30000)
    return page.evaluate(FIGURES_JS)


# Every plotly figure of a page as the browser drew it: its title, the legend entries shown, and each trace as
# plotly resolved it (_fullData: defaults filled in, the y values decoded from plotly.py's binary arrays).
FIGURES_JS = r"""() => [...document.querySelectorAll('.js-plotly-plot')].map(gd => ({
  title: [(gd.layout.title && gd.layout.title.text) || '', ...(gd._fullLayout.annotations || []).map(a => a.text)].join(' | '),
  legend: [...gd.querySelectorAll('.legend .traces .legendtext')].map(e => e.textContent),
  axes: Object.fromEntries(Object.entries(gd._fullLayout).filter(([k]) => /^[xy]axis\d*$/.test(k)).map(([k, v]) => [k, (v.title && v.title.text) || ''])),
  traces: gd._fullData.map(t => ({
    name: t.name, type: t.type, visible: t.visible, showlegend: t.showlegend, legendgroup: t.legendgroup,
    mode: t.mode || '', width: t.line ? t.line.width : null, dash: t.line ? t.line.dash : null,
    symbol: t.marker ? t.marker.symbol : null, fill: t.fill || 'none', xaxis: t.xaxis, yaxis: t.yaxis,
    x: t.x ? Array.from(t.x) : null, y: t.y ? Array.from(t.y) : null})),
}))"""
