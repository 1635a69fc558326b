"""pythia_sweep: when during training does an attention-head mechanism appear?

Stages, one module each, in the order the data flows:
checkpoints (which revisions, fetched how) -> prompts (aligned clean/buggy token pairs) ->
patching (replace chosen heads' outputs) -> evaluation (batched conditions over prompts) ->
scoring (success, log-prob difference, intervals) -> engine (one checkpoint end to end) ->
sweep (Ray: every checkpoint) -> tracking (MLflow) -> report (polars + plotly).
"""

__version__ = "0.1.0"
