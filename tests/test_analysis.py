"""The analysis plan on constructed timelines whose answers are known."""

import pytest

from pythia_sweep import analysis
from pythia_sweep.report import summarize, timeline
from pythia_sweep.tasks import load_task

TASK = load_task("tasks/decimal-robust.toml")

STEPS = [0, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 143000]


def record(revision, step, strength, status="ok", digest=None, ci=0.1, error=None):
    even = max(0.0, min(1.0, 0.5 + strength / 2))
    odd = even - strength
    cond = lambda rate, kind="group": {"kind": kind, "success_rate": rate, "success_rate_ci": [max(0, rate - 0.1), min(1, rate + 0.1)], "logprob_diff": rate, "logprob_diff_ci": [rate - 0.1, rate + 0.1], "n_prompts": 48}  # noqa: E731
    if status != "ok":
        return {"revision": revision, "step": step, "status": "failed", "error": error or "boom", "weights_digest": None}
    contrast = {"success_rate": strength, "success_rate_ci": [strength - ci, strength + ci], "logprob_diff": strength, "prob_diff": 0.0}
    return {
        "revision": revision, "step": step, "status": "ok", "error": None, "weights_digest": digest or f"d{step}",
        "contrasts": {"strength": contrast | {"value": strength}},
        "conditions": {"even": cond(even), "odd": cond(odd), "baseline": cond(0.0, "baseline"), "clean": cond(1.0, "clean"), "all": cond(even, "all")},
        "settings": {"n_prompts": 48},
    }


def summary_of(strengths, **kw):
    records = [record(f"step{s}", s, v) for s, v in zip(STEPS, strengths)]
    return summarize(timeline(records), TASK, 143000)


def test_strength_classes():
    assert [analysis.strength_class(s) for s in (0.9, -0.6, 0.35, 0.2, 0.05)] == ["strong", "strong", "moderate", "weak", "none"]


def test_sudden_emergence():
    s = summary_of([0, 0, 0, 0, 0, 0.05, 0.9, 0.95, 1.0, 1.0])
    assert s["emergence_point"]["revision"] == "step32000"
    assert s["emergence_point"]["fraction"] == pytest.approx(32000 / 143000)
    assert s["emergence_type"] == "early" and s["hypothesis"].startswith("H1")
    assert s["shape"]["shape"] == "sudden" and s["monotonic"]
    assert s["events"] == [{"event": "appear", "step": 32000}]
    assert s["quality"]["final_shows_known_result"] and s["quality"]["earliest_shows_none"]


def test_gradual_late_emergence():
    s = summary_of([0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.38, 0.45, 0.55])
    assert s["emergence_point"]["step"] == 143000 and s["emergence_type"] == "late"
    assert s["hypothesis"].startswith("H2") and s["shape"]["shape"] == "gradual"


def test_mid_emergence_uses_the_real_last_step():
    steps = [0, 50000, 80000, 143000]
    frame = timeline([record(f"step{a}", a, v) for a, v in zip(steps, [0, 0.2, 0.8, 0.9])])
    s = summarize(frame, TASK, 143000)
    assert s["emergence_type"] == "mid" and s["hypothesis"].startswith("H3")  # 80000/143000 = 0.56, not 0.08


def test_fluctuating_timeline():
    s = summary_of([0, 0.6, 0.7, 0.2, 0.1, 0.6, 0.8, 0.3, 0.7, 0.9])
    assert not s["monotonic"]
    assert [e["event"] for e in s["events"]] == ["appear", "disappear", "reappear", "disappear", "reappear"]
    assert "not monotonic" in s["verdict"]


def test_never_emerges():
    s = summary_of([0.0] * 10)
    assert s["emergence_point"] is None and s["emergence_type"] == "none"
    assert s["shape"]["shape"] == "flat" and "No emergence of strength (even - odd, success rate)" in s["verdict"]
    assert "below the weak level 0.1" in s["verdict"] and "none" not in s["verdict"]  # plain words, no class names
    assert not s["quality"]["final_shows_known_result"]


def test_failed_and_duplicate_revisions_are_reported_and_excluded():
    records = [record("step0", 0, 0.0), record("step1000", 1000, 0.0), record("step2000", 2000, 0.9, digest="same"),
               record("step4000", 4000, 0.9, digest="same"), record("step8000", 8000, 0.0, status="failed", error="RevisionNotPublished: x"),
               record("step143000", 143000, 0.95)]  # fmt: skip
    s = summarize(timeline(records), TASK, 143000)
    assert s["quality"]["duplicate_revisions"] == [["step2000", "step4000"]]
    assert s["quality"]["failed_revisions"] == [{"revision": "step8000", "error": "RevisionNotPublished: x"}]
    assert s["emergence_point"]["revision"] == "step143000"  # the duplicated pair is not trusted
    assert "step8000" in s["verdict"] and "step2000 = step4000" in s["verdict"]


def test_wide_intervals_are_called_out():
    records = [record(f"step{a}", a, v, ci=0.6) for a, v in zip(STEPS, [0] * 9 + [1.0])]
    s = summarize(timeline(records), TASK, 143000)
    assert len(s["quality"]["intervals_too_wide"]) == 10 and "too wide to call it" in s["verdict"]
