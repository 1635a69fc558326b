"""How the report is built, one module per stage: records -> reduce (a polars timeline, the analysis, the
summary) -> verdict (what the numbers support, in words) -> figures (plotly) -> page (one self-contained
HTML page) -> build (read a sweep from MLflow, write parquet, JSON and HTML, log the summary back).

Every label comes from the sweep's task (its question, groups and contrasts) and every column from the
records' own names (numbers.named) or the long table (numbers.long_table): nothing here knows which task it
draws. The page is self-contained (plotly.js embedded) so it opens offline.
"""
