"""pythia_sweep: when during training does an attention-head mechanism appear?

A folder per stage, in the order the data flows; each imports only what sits above it in this list:

  (top level)  the shared vocabulary: levels (a contrast's levels, its sign rule), stats (a checkpoint's statistics,
               typed), records (the checkpoint record), numbers (every number of a record, one walk: the long table,
               MLflow's names, the report's columns), analysis (crossings and their interval), config (the run
               config), digest, validation and errors
  task/        what is asked: a task file read and checked (schema, prompts_schema), the task (definition), its
               prompt pairs (pairs) and their aligned token positions (align)
  hub/         where checkpoints come from: published revisions and the end of training (revisions), weight files and
               their hashes (weights), fetching (fetch), which revisions are one checkpoint (duplicates), retries (retry)
  measure/     one checkpoint: its conditions, patching, the fast path beside the plain reference, scoring, the head
               map, attention evidence, circuits, the scan, and the checkpoint end to end (checkpoint)
  tracking/    MLflow: the store, its writer (the driver's) and reader (the report's), a tracking server
  run/         the driver: every checkpoint of every model on Ray workers or here, with progress; studies; refine
  report/      the emergence report: reduce (polars), claim and verdict, figures (plotly), pages, build, study
  commands/    the command line: `pythia-sweep <command>`, or `python -m jobs.<command>` in a checkout
  demo/        what `make demo` runs offline: the demo model family and a writer of the Hub's cache layout
  shipped/     the task files and run configs that come with the package

In a notebook, a sweep's numbers as one polars frame: `pythia_sweep.load_long_table()` (numbers.long_table, read
from the store by the tracking reader).
"""

__version__ = "0.1.0"


def load_long_table(sweep: str | None = None, *, tracking_uri: str | None = None):
    """A sweep's long table (see pythia_sweep.records): parent run id, sweep_id or name; default the latest."""
    from pythia_sweep.tracking.reader import load_long_table as load

    return load(sweep, tracking_uri=tracking_uri)
