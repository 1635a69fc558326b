"""Which checkpoint results are final: the one rule the writer (what is recorded again), the readers (which run of a
revision is its result) and the report (which records' weights count as measured) call.

A record's status is one of records.STATUSES. "ok" (measured) and "duplicate" (identical weights to a revision
measured) are final; "failed" is measured again when the sweep is resumed. A run in the store is final when its
status is, and its writing finished.
"""

from __future__ import annotations

FINAL_STATUSES = ("ok", "duplicate")  # a final result: measured, or identical weights to a revision measured


def final_status(status: str) -> bool:
    """Whether a checkpoint's status is a final result (records.STATUSES: "failed" is measured again)."""
    return status in FINAL_STATUSES


def is_final(run) -> bool:
    """Whether a checkpoint run holds a final result (measured ok, or a duplicate): its status tag says so and its
    writing finished (a run is terminated FINISHED as the last step of recording it; one left RUNNING was cut off
    part-way, by a lost tracking server or a killed driver, and is measured again)."""
    return final_status(run.data.tags.get("checkpoint_status", "")) and run.info.status == "FINISHED"


def is_written(run) -> bool:
    """Whether a checkpoint run's writing finished, ok or failed (a run left RUNNING may lack its record.json)."""
    return run.info.status in ("FINISHED", "FAILED")
