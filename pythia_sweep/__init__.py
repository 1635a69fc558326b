"""pythia_sweep: when during training does an attention-head mechanism appear?

Stages, one module each, in the order the data flows:
tasks (what is asked: prompts, answers, head groups, contrasts, from a task file) ->
checkpoints (which revisions, fetched how; the duplicate and final-step rules) -> prompts (aligned
clean/corrupted token positions) -> patching (replace chosen heads' outputs) -> evaluation (batched conditions
over prompts) -> scoring (success, log-prob and probability differences, restoration, intervals, contrasts,
the null test) -> checkpoint_run (one checkpoint end to end) -> sweep (Ray: every checkpoint) -> tracking (MLflow) ->
records (the long table) -> analysis -> report/ (reduce, verdict, figures, page, build: polars + plotly).
`demo/` is what `make demo` runs offline: the demo model family and a writer of the Hub's cache layout.

In a notebook, a sweep's numbers as one polars frame: `pythia_sweep.load_long_table()` (records.long_table,
read by tracking.load_long_table).
"""

__version__ = "0.1.0"


def load_long_table(sweep: str | None = None, *, tracking_uri: str | None = None):
    """A sweep's long table (see pythia_sweep.records): parent run id, sweep_id or name; default the latest."""
    from pythia_sweep.tracking.reader import load_long_table as load

    return load(sweep, tracking_uri=tracking_uri)
