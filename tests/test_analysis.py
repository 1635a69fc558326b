"""The analysis plan and the verdict's claims on constructed sweeps whose answers are known.

The records are built the way checkpoint_run.measure builds them (per-prompt response rows, per-condition rates,
contrasts naming their two sides, the null's placement), so the reducer reads them exactly as it reads a
sweep's: the emergence-step interval resamples these prompts."""

from dataclasses import replace

import numpy as np
import pytest

from pythia_sweep import analysis
from pythia_sweep.checkpoints import Checkpoint, final_step
from pythia_sweep.duplicates import identical_weights
from pythia_sweep.config import SweepConfig
from pythia_sweep.records import CheckpointRecord
from pythia_sweep.report.reduce import reduce
from pythia_sweep.scoring import null_position, paired_difference_interval, wilson_interval
from pythia_sweep.task_schema import load_task

TASK = load_task("tasks/decimal-robust.toml")
CONFIG = SweepConfig(task="tasks/decimal-robust.toml", bootstrap_resamples=400)
STEPS = [0, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 143000]
PUBLISHED = [Checkpoint(f"step{s}", s) for s in sorted({0, 1, *STEPS})]
N = 48
IDENTITY = {"model": "EleutherAI/pythia-160m", "sweep_id": "test", "task": TASK.describe()}


def record(revision, step, strength, *, n=N, clean=1.0, status="ok", digest=None, error=None, null_p=None, possible=None,
           wide=False):  # fmt: skip
    """A record whose even/odd success rates differ by `strength` over `n` prompts (even wins on its first prompts).
    `wide`: the even side's wins are concentrated, odd's spread, so the contrast's per-prompt values vary most."""
    if status != "ok":
        return CheckpointRecord(**IDENTITY, revision=revision, step=step, status=status, error=error or "boom", weights_digest=digest)
    even_k = round(n * max(0.0, min(1.0, 0.5 + strength / 2)))
    odd_k = even_k - round(n * strength)
    success = {"baseline": [0] * n, "clean": [1] * round(n * clean) + [0] * (n - round(n * clean)),
               "even": [1] * even_k + [0] * (n - even_k), "odd": ([0] * (n - odd_k) + [1] * odd_k) if wide else [1] * odd_k + [0] * (n - odd_k)}  # fmt: skip
    rows = [{"condition": c, "prompt_id": f"p{i:02d}", "success": bool(v), "logprob_diff": float(v), "prob_diff": float(v) / 2, "weight": 1}
            for c, values in success.items() for i, v in enumerate(values)]  # fmt: skip

    def cond(name, kind):
        k = sum(success[name])
        return {"kind": kind, "heads": [], "method": "per-head", "success_rate": k / n, "success_rate_ci": list(wilson_interval(k, n)),
                "logprob_diff": k / n, "logprob_diff_ci": None, "prob_diff": k / n / 2, "n_prompts": n}  # fmt: skip

    diffs = {m: [a[key] - b[key] for a, b in zip([r for r in rows if r["condition"] == "even"], [r for r in rows if r["condition"] == "odd"])]
             for m, key in (("success_rate", "success"), ("logprob_diff", "logprob_diff"), ("prob_diff", "prob_diff"))}  # fmt: skip
    contrast = {"plus": "even", "minus": "odd", "metric": "success_rate", "method": "per-head"}
    for m, values in diffs.items():
        contrast[m] = float(np.mean(values))
        contrast[f"{m}_ci"] = list(paired_difference_interval([float(v) for v in values], [0.0] * n, 400, 0))
    contrast |= {"value": contrast["success_rate"], "value_ci": contrast["success_rate_ci"]}
    null = {"k": 0, "groups": {}}
    if null_p is not None:
        null = {"k": 20, "size": 6, "groups": {"even": {m: {"p_value": null_p, "percentile": 50.0} for m in ("success_rate", "logprob_diff", "prob_diff")}}}
    return CheckpointRecord(
        **IDENTITY, revision=revision, step=step, status="ok", weights_digest=digest or f"d{revision}", contrasts={"strength": contrast},
        conditions={"even": cond("even", "group"), "odd": cond("odd", "group"), "baseline": cond("baseline", "baseline"), "clean": cond("clean", "clean")},
        null=null, settings={"n_prompts": n, "null": {"group": "even", "possible": 923 if possible is None else possible}}, responses=rows,
    )  # fmt: skip


def summary_of(records, published=PUBLISHED, task=TASK):
    return reduce(records, task, CONFIG, published)[0]


def timeline_of(strengths, **kw):
    return [record(f"step{s}", s, v, **kw) for s, v in zip(STEPS, strengths)]


def test_strength_classes():
    assert [analysis.strength_class(s) for s in (0.9, -0.6, 0.35, 0.2, 0.05)] == ["strong", "strong", "moderate", "weak", "none"]


def test_sudden_emergence_is_called_with_an_interval_on_its_step():
    s = summary_of(timeline_of([0, 0, 0, 0, 0, 0.05, 0.9, 0.95, 1.0, 1.0], null_p=0.01))
    assert s["emergence_point"]["revision"] == "step32000"
    assert s["emergence_point"]["fraction"] == pytest.approx(32000 / 143000)
    assert s["emergence_type"] == "early" and s["hypothesis"].startswith("H1")
    assert s["shape"]["shape"] == "sudden" and s["monotonic"]
    assert s["events"] == [{"event": "appear", "step": 32000}]
    assert s["quality"]["final_shows_known_result"] and s["quality"]["earliest_shows_none"]
    assert s["emergence_step_interval"]["low"] == 32000 and s["emergence_step_interval"]["high"] == 32000  # 0.05 -> 0.9: no doubt
    assert s["claim"]["call"] == "emerges"
    assert s["verdict"].startswith("strength (even - odd, success rate) emerges at step32000 (step 32,000, 22.4% of training; "
                                   "95%: at step 32,000 over 400 prompt resamples)")  # fmt: skip


def test_emergence_step_interval_spans_the_checkpoints_prompt_noise_allows():
    """Near the threshold the crossing moves with the prompts drawn: the interval covers several checkpoints,
    and a series whose prompts mostly never cross has no upper end (the verdict cannot call it)."""
    s = summary_of(timeline_of([0, 0.1, 0.2, 0.3, 0.4, 0.46, 0.5, 0.54, 0.58, 0.9], null_p=0.01, wide=True))
    interval = s["emergence_step_interval"]
    assert interval["low"] < s["emergence_point"]["step"] <= interval["high"]
    assert 0.5 < interval["share_emerging"] <= 1
    barely = summary_of(timeline_of([0, 0, 0, 0, 0, 0, 0, 0, 0, 0.52], null_p=0.01, wide=True))
    assert barely["emergence_point"]["step"] == 143000 and barely["emergence_step_interval"]["high"] is None
    assert barely["claim"]["call"] == "cannot call" and barely["verdict"].startswith("Cannot call strength")
    assert "resamples of its 48 prompts it never crosses the strong level 0.5" in barely["verdict"]


def test_gradual_late_emergence():
    s = summary_of(timeline_of([0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.38, 0.45, 0.9], null_p=0.01))
    assert s["emergence_point"]["step"] == 143000 and s["emergence_type"] == "late"
    assert s["hypothesis"].startswith("H2")
    s = summary_of(timeline_of([0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.38, 0.45, 0.55], null_p=0.01))
    assert s["shape"]["shape"] == "gradual"


def test_mid_emergence_uses_the_real_last_step():
    s = summary_of([record(f"step{a}", a, v, null_p=0.01) for a, v in zip([0, 50000, 80000, 143000], [0, 0.2, 0.8, 0.9])])
    assert s["emergence_type"] == "mid" and s["hypothesis"].startswith("H3")  # 80000/143000 = 0.56, not 0.08


def test_fluctuating_timeline():
    s = summary_of(timeline_of([0, 0.6, 0.7, 0.2, 0.1, 0.6, 0.8, 0.3, 0.7, 0.9], null_p=0.01))
    assert not s["monotonic"]
    assert [e["event"] for e in s["events"]] == ["appear", "disappear", "reappear", "disappear", "reappear"]
    assert "not monotonic" in s["verdict"]


def test_never_emerges():
    s = summary_of(timeline_of([0.0] * 10, null_p=0.5))
    assert s["emergence_point"] is None and s["emergence_type"] == "none"
    assert s["shape"]["shape"] == "flat" and s["claim"]["call"] == "no emergence"
    assert s["verdict"].startswith("No emergence of strength (even - odd, success rate)")
    assert "below the weak level 0.1" in s["verdict"] and "none" not in s["verdict"]  # plain words, no class names
    assert not s["quality"]["final_shows_known_result"]


def test_case4_a_failed_revision_never_sets_the_final_step():
    """`--checkpoints step128,step999,step448` on a family ending at 448: step999 fails and must not be the
    denominator (it was: "step320 ... 32.0% of training" where it is 71.4%)."""
    demo = [Checkpoint(f"step{s}", s) for s in (0, 128, 320, 448)]
    records = [record("step128", 128, 0.0), record("step320", 320, 0.9, null_p=0.01), record("step448", 448, 0.95, null_p=0.01),
               record("step999", 999, 0.0, status="failed", error="RevisionNotPublished: revision 'step999' does not exist")]  # fmt: skip
    s = summary_of(records, published=demo)
    assert s["final_step"] == 448 and s["emergence_point"]["fraction"] == pytest.approx(320 / 448)
    assert "71.4% of training" in s["verdict"]
    assert summary_of(records, published=None)["final_step"] == 448  # no published list: the last ok record, not step999
    assert final_step(None, []) is None and final_step(demo, [999]) == 448


def test_case5_wide_intervals_are_cannot_call_not_emergence():
    """14 of 14 intervals too wide used to print "emerges at stepN" first; now the first words say cannot call."""
    few = [record(f"step{a}", a, v, n=3, null_p=0.01, wide=True) for a, v in zip(STEPS, [0] * 9 + [1.0])]
    s = summary_of(few)
    assert len(s["quality"]["intervals_too_wide"]) >= 9
    assert s["verdict"].startswith("Cannot call strength (even - odd, success rate): ")
    assert "wider than the strong level 0.5" in s["verdict"] and "too few distinct prompts" not in s["verdict"]
    assert "(3 distinct prompts)" in s["verdict"]


def test_case5_a_group_that_does_not_beat_the_null_is_cannot_call():
    s = summary_of(timeline_of([0, 0, 0, 0, 0, 0.05, 0.9, 0.95, 1.0, 1.0], null_p=0.19))
    assert s["null"]["status"] == "does not beat" and s["claim"]["call"] == "cannot call"
    assert s["verdict"].startswith("Cannot call strength") and s["verdict"].count("null p = 0.19") == 1  # a reason, said once


def test_case5_no_null_possible_is_a_stated_fact_not_a_failed_test():
    s = summary_of(timeline_of([0, 0, 0, 0, 0, 0.05, 0.9, 0.95, 1.0, 1.0], possible=0))
    assert s["null"]["status"] == "no null possible" and "group_beats_null_at_final" not in s
    assert s["claim"]["call"] == "emerges" and "No null control is possible: no other set of" in s["verdict"]


def test_case5_a_clean_prompt_the_model_fails_is_flagged_and_blocks_the_call():
    s = summary_of(timeline_of([0, 0, 0, 0, 0, 0.05, 0.9, 0.95, 1.0, 1.0], null_p=0.01, clean=0.2))
    assert s["clean"]["answered"] is False and s["claim"]["call"] == "cannot call"
    assert "the model does not answer the clean prompt (clean success rate 0.21" in s["verdict"]
    flat = summary_of(timeline_of([0.0] * 10, null_p=0.5, clean=0.2))  # "none" cannot be read off a model that fails clean
    assert flat["claim"]["call"] == "cannot call" and flat["verdict"].startswith("Cannot call")


def test_case6_the_shape_is_judged_on_training_time_so_added_checkpoints_do_not_flip_it():
    """The demo's sweep saw 256 -> 320 jump; refine added 288 and 304 in between. Neighbour jumps called it
    "sudden" before and "gradual" after; one doubling of training steps holds the rise either way."""
    coarse = [0, 1, 2, 4, 8, 16, 32, 64, 128, 192, 256, 320, 384, 448]
    values = [0] * 10 + [0.03, 0.81, 0.9, 0.95]
    dense = sorted(coarse + [288, 304])
    dense_values = [0] * 10 + [0.03, 0.22, 0.44, 0.81, 0.9, 0.95]
    assert analysis.rise_shape(coarse, values)["shape"] == analysis.rise_shape(dense, dense_values)["shape"] == "sudden"
    slow = [0.05 * i for i in range(14)]  # the same rise spread evenly over log training time
    assert analysis.rise_shape(coarse, slow)["shape"] == "gradual"


def test_case7_the_null_is_read_on_the_headlines_own_metric():
    from pythia_sweep.scoring import null_test
    from pythia_sweep.tasks import Contrast

    null = {"k": 20, "size": 6, "groups": {"g": {"logprob_diff": {"p_value": 0.01, "percentile": 99.0},
                                                 "prob_diff": {"p_value": 0.4, "percentile": 60.0}}}}  # fmt: skip
    test = null_test(null, Contrast("gt", "g", "baseline", "prob_diff", (0.5, 0.3, 0.1)), {"possible": 100})
    assert test["metric"] == "prob_diff" and test["p_value"] == 0.4 and test["status"] == "does not beat"
    assert null_test(null, Contrast("gt", "g", "baseline", "logprob_diff", (1, 0.5, 0.2)), {"possible": 100})["p_value"] == 0.01


def test_a_group_above_every_null_set_is_told_apart_from_an_ordinary_one_when_too_few_sets_exist():
    """Two heads of an 8-head model have 15 rivals: above all of them, p is 1/16 and cannot reach 0.05. The null still
    does not pass (the claim cannot be called), but the statement says why: too few sets, not an unremarkable group."""
    from pythia_sweep.scoring import null_test
    from pythia_sweep.tasks import Contrast

    contrast = Contrast("c", "g", "baseline", "logprob_diff", (1, 0.5, 0.2))
    top = {"k": 15, "size": 2, "groups": {"g": {"logprob_diff": {"p_value": 1 / 16, "percentile": 100.0}}}}
    test = null_test(top, contrast, {"possible": 15})
    assert test["status"] == "does not beat"
    assert test["statement"] == ("the g group is above all 15 random 2-head sets on logprob diff, but 15 sets cannot give a null p "
                                 "at or below 0.05 (the smallest possible is 0.062; the pool holds only 15 such sets)")  # fmt: skip
    assert "null_subsets = 19 or more could" in null_test(top, contrast, {"possible": 300})["statement"]
    middling = {**top, "groups": {"g": {"logprob_diff": {"p_value": 0.5, "percentile": 50.0}}}}
    assert "does not stand out among 15 random 2-head sets" in null_test(middling, contrast, {"possible": 15})["statement"]


def test_case8_identical_weights_belong_to_the_final_revision_then_step0_else_none():
    assert identical_weights({"step0": "a", "step1": "a", "step2": "b"}, "step143000")[0].owner == "step0"  # #83, #198
    (main,) = identical_weights({"step66000": "m", "step70000": "m", "step143000": "m"}, "step143000")  # pythia-2.8b, #205
    assert main.owner == "step143000" and main.measured == "step143000"
    (lost,) = identical_weights({"step3000": "x", "step4000": "x", "step5000": "y"}, "step143000")
    assert lost.owner is None and lost.measured == "step3000" and lost.members == ("step3000", "step4000")


def test_case8_step0_and_the_final_revision_stay_in_the_analysis():
    step0_is_step1 = [record("step0", 0, 0.0, digest="init"), record("step1", 1, 0.0, digest="init")] + timeline_of(
        [0, 0, 0, 0, 0.05, 0.9, 0.95, 1.0, 1.0], null_p=0.01)[1:]  # fmt: skip
    step0_is_step1 = [r for r in step0_is_step1 if r.revision != "step1000"] + [record("step1000", 1000, 0.0)]
    s = summary_of(step0_is_step1)
    assert s["quality"]["duplicates"] == [{"members": ["step0", "step1"], "measurement_belongs_to": "step0"}]
    assert s["earliest_shows_none"] if "earliest_shows_none" in s else s["quality"]["earliest_shows_none"]
    frame = reduce(step0_is_step1, TASK, CONFIG, PUBLISHED)[1]
    assert frame.filter(frame["revision"] == "step0")["analysed"].item() is True
    assert frame.filter(frame["revision"] == "step1")["analysed"].item() is False

    late = timeline_of([0, 0, 0, 0, 0, 0.05, 0.9, 0.95, 1.0, 1.0], null_p=0.01)
    late[-3:] = [replace(r, weights_digest="final") for r in late[-3:]]  # step64000 ... step143000 serve the final weights
    s = summary_of(late)
    assert s["quality"]["duplicates"] == [{"members": ["step64000", "step128000", "step143000"], "measurement_belongs_to": "step143000"}]
    assert s["usable_checkpoints"] == 8 and s["quality"]["final_shows_known_result"]
    assert "Identical weights: step64000 = step128000 = step143000 (measured once, as step143000" in s["verdict"]


def test_failed_revisions_are_reported_and_excluded():
    records = timeline_of([0, 0, 0, 0, 0, 0.05, 0.9, 0.95, 1.0, 1.0], null_p=0.01)
    records[4] = record("step8000", 8000, 0.0, status="failed", error="RevisionNotPublished: x")
    s = summary_of(records)
    assert s["quality"]["failed_revisions"] == [{"revision": "step8000", "error": "RevisionNotPublished: x"}]
    assert s["usable_checkpoints"] == 9 and "1 revision failed: step8000" in s["verdict"]


def test_two_methods_with_identical_numbers_are_stated_once():
    config = SweepConfig(task="tasks/decimal-robust.toml", bootstrap_resamples=400, method="both")
    records = timeline_of([0, 0, 0, 0, 0, 0.05, 0.9, 0.95, 1.0, 1.0], null_p=0.01)
    for r in records:
        r.contrasts["upstream/strength"] = dict(r.contrasts["strength"], method="upstream")
    s = reduce(records, TASK, config, PUBLISHED)[0]
    assert s["verdict"].count("emerges at") == 1 and "strength (even - odd, success rate; upstream identical) emerges" in s["verdict"]


def test_null_position_exact_p_value_is_never_zero():
    assert null_position(1.0, [0.0] * 10)["p_value"] == 1 / 11


def test_case8_a_sweep_recorded_before_the_rule_gives_its_numbers_to_the_owner():
    """Older sweeps measured the earliest twin (step64000) and recorded the final step as its duplicate: the
    numbers now belong to step143000, where they are analysed, and step64000 is the duplicate."""
    late = timeline_of([0, 0, 0, 0, 0, 0.05, 0.9, 0.95, 1.0, 1.0], null_p=0.01)
    late[-3] = replace(late[-3], weights_digest="final")
    late[-1] = CheckpointRecord(**IDENTITY, revision="step143000", step=143000, status="duplicate", weights_digest="final",
                                duplicate_of=("step64000",))  # fmt: skip
    measured = late[-3].contrasts["strength"]["success_rate"]
    summary, frame, long = reduce(late, TASK, CONFIG, PUBLISHED)
    final = frame.filter(frame["revision"] == "step143000").row(0, named=True)
    assert final["analysed"] and final["strength/success_rate"] == measured  # step64000's numbers, now its owner's
    assert frame.filter(frame["revision"] == "step64000")["analysed"].item() is False
    assert summary["final_value"] == measured and set(long["revision"]) >= {"step143000"}
    assert "step64000" not in set(long["revision"])  # one measurement, one place


def test_a_sweep_without_null_sets_says_so():
    s = summary_of(timeline_of([0, 0, 0, 0, 0, 0.05, 0.9, 0.95, 1.0, 1.0]))  # k = 0, null sets possible
    assert s["null"]["status"] == "not run"
    assert "No null control: the sweep drew no random head sets (null_subsets = 0)." in s["verdict"]
