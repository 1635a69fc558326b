"""Measuring one checkpoint: what it runs, how heads are patched, how the rows become numbers.

    conditions.py   what one checkpoint runs: the conditions, each a set of heads patched on one prompt by one method
    patching.py     how heads are patched: the clean run's head outputs written into the corrupted run
    batch.py        a batch of token rows as tensors: padding, the pad and end-of-text ids, distinct rows
    fastpath.py     the fast path: patched rows scored and decoded with no work done twice
    reference.py    the plain way, one prompt at a time with `generate`: what the fast path is tested against
    evaluation.py   the conditions over the prompts, one row per (condition, prompt), by either executor
    scoring.py      the rows as numbers: per-condition metrics with intervals, contrasts, the null test
    headmap.py      every head at once by attribution patching, checked by exact patching of the top ones
    evidence.py     attention patterns and in-context learning on repeated random tokens
    circuits/       which edges carry the task: edge attribution, the circuit search, circuits over training
    floor.py        the hardware floor: the work a checkpoint's conditions need at this device's speed
    scan.py         every head of a layer patched alone at one checkpoint
    loading.py      the model loaded (device, dtype, weights in place, a wider dtype after a NaN) and batches sized
    checkpoint.py   one checkpoint end to end: plan, pre-flight, discovery, measure, the record
"""
