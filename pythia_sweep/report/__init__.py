"""How the report is built, one module per stage: records -> reduce (a polars timeline, the analysis, the
summary) -> claim (what the numbers support: the rule, reasons as data) -> verdict (the claim in words) -> figures
(plotly: plotting's shared parts, timeline_figures, head_figures, circuit_figures) -> page (one self-contained HTML
page) -> build (read a sweep from MLflow, write parquet, JSON and HTML, log the summary back); compare, scan_page,
circuits_page and study are the other pages.

Every label comes from the sweep's task (its question, groups and contrasts) and every column from the
records' own names (numbers.named) or the long table (numbers.long_table): nothing here knows which task it
draws. The page is self-contained (plotly.js embedded) so it opens offline.
"""
