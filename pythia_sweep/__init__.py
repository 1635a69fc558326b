"""pythia_sweep: when during training does an attention-head mechanism appear?

Stages, one module each, in the order the data flows:
tasks (what is asked: prompts, answers, head groups, contrasts, from a task file) ->
checkpoints (which revisions, fetched how) -> prompts (aligned clean/corrupted token positions) ->
patching (replace chosen heads' outputs) -> evaluation (batched conditions over prompts) ->
scoring (success, log-prob and probability differences, restoration, intervals, contrasts, null) ->
engine (one checkpoint end to end) -> sweep (Ray: every checkpoint) -> tracking (MLflow) ->
analysis + report (polars + plotly). `testing/` holds the stand-ins: a local Hub cache writer, the
offline demo family, fault injection.
"""

__version__ = "0.1.0"
