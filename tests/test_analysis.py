"""The analysis plan and the verdict's claims on constructed sweeps whose answers are known.

The records are built the way measure/checkpoint.measure builds them (per-prompt response rows, per-condition rates,
contrasts naming their two sides, the null's placement), so the reducer reads them exactly as it reads a
sweep's: the emergence-step interval resamples these prompts."""

import json
import re
from dataclasses import replace

import numpy as np
import pytest

from pythia_sweep import analysis
from pythia_sweep.hub.revisions import Checkpoint, final_step
from pythia_sweep.hub.duplicates import identical_weights
from pythia_sweep.config import SweepConfig
from pythia_sweep.records import CheckpointRecord
from pythia_sweep.stats import ConditionStats, ContrastStats, Estimate, NullPosition, NullStats
from pythia_sweep.report.reduce import reduce
from pythia_sweep.measure.scoring import null_position, paired_difference_interval, wilson_interval
from pythia_sweep.analysis import TAIL
from pythia_sweep.task.schema import load_task
from pythia_sweep.task.definition import Contrast
from pythia_sweep.tracking.legacy import upgrade_records

TASK = load_task("tasks/decimal-robust.toml")
CONFIG = SweepConfig(task="tasks/decimal-robust.toml", bootstrap_resamples=400)
STEPS = [0, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 143000]
PUBLISHED = [Checkpoint(f"step{s}", s) for s in sorted({0, 1, *STEPS})]
N = 48
IDENTITY = {"model": "EleutherAI/pythia-160m", "sweep_id": "test", "task": TASK.describe()}


def measured(revision, step, plus, minus, *, clean=None, metric="success_rate", null_p=None, possible=None, null_k=20, null_size=6,
             digest=None):  # fmt: skip
    """A record whose "even" and "odd" conditions take the per-prompt values `plus` and `minus` on `metric` (a success
    is a value above 0 on a log-prob metric), built the way measure/scoring.summarize_record builds one, with a "strength"
    contrast of even - odd on `metric`."""
    n = len(plus)
    clean = [1.0] * n if clean is None else clean
    values = {"baseline": [0.0] * n, "clean": clean, "even": list(plus), "odd": list(minus)}
    as_success = (lambda v: v > 0.5) if metric == "success_rate" else (lambda v: v > 0)
    rows = [{"condition": c, "prompt_id": f"p{i:02d}", "success": bool(as_success(v)),
             "logprob_diff": float(v), "prob_diff": float(v) / 2, "weight": 1} for c, vs in values.items() for i, v in enumerate(vs)]  # fmt: skip

    def cond(name, kind):
        got = [r for r in rows if r["condition"] == name]
        k = sum(r["success"] for r in got)
        mean = float(np.mean([r["logprob_diff"] for r in got]))
        return ConditionStats(kind=kind, heads=(), prompt="clean" if kind == "clean" else "corrupted", method="per-head", n_prompts=n,
                              n_trials=n, decoded=True, successes=k, success_rate=Estimate(k / n, wilson_interval(k, n)),
                              logprob_diff=Estimate(mean), prob_diff=Estimate(mean / 2))  # fmt: skip

    even, odd = ([r for r in rows if r["condition"] == c] for c in ("even", "odd"))
    estimates = {}
    for m, key in (("success_rate", "success"), ("logprob_diff", "logprob_diff"), ("prob_diff", "prob_diff")):
        diffs = [float(a[key]) - float(b[key]) for a, b in zip(even, odd)]
        estimates[m] = Estimate(float(np.mean(diffs)), paired_difference_interval(diffs, [0.0] * n, 400, 0))
    contrast = ContrastStats(plus="even", minus="odd", metric=metric, method="per-head", **estimates)
    null = NullStats()
    if null_p is not None:
        null = NullStats(k=null_k, size=null_size,
                         groups={g: {m: NullPosition(percentile=50.0, p_value=null_p) for m in ("success_rate", "logprob_diff", "prob_diff")}
                                 for g in ("even", "odd")})  # fmt: skip
    return CheckpointRecord(
        **IDENTITY, revision=revision, step=step, status="ok", weights_digest=digest or f"d{revision}", contrasts={"strength": contrast},
        conditions={"even": cond("even", "group"), "odd": cond("odd", "group"), "baseline": cond("baseline", "baseline"), "clean": cond("clean", "clean")},
        null=null, settings={"n_prompts": n, "null": {"group": "even", "size": null_size, "possible": 923 if possible is None else possible,
                                                      "pool_description": "layer 6"}}, responses=rows,
    )  # fmt: skip


def record(revision, step, strength, *, n=N, clean=1.0, status="ok", digest=None, error=None, null_p=None, possible=None,
           wide=False):  # fmt: skip
    """A record whose even/odd success rates differ by `strength` over `n` prompts (even wins on its first prompts).
    `wide`: the even side's wins are concentrated, odd's spread, so the contrast's per-prompt values vary most."""
    if status != "ok":
        return CheckpointRecord(**IDENTITY, revision=revision, step=step, status=status, error=error or "boom", weights_digest=digest)
    even_k = round(n * max(0.0, min(1.0, 0.5 + strength / 2)))
    odd_k = even_k - round(n * strength)
    even = [1.0] * even_k + [0.0] * (n - even_k)
    odd = ([0.0] * (n - odd_k) + [1.0] * odd_k) if wide else [1.0] * odd_k + [0.0] * (n - odd_k)
    clean_values = [1.0] * round(n * clean) + [0.0] * (n - round(n * clean))
    return measured(revision, step, even, odd, clean=clean_values, null_p=null_p, possible=possible, digest=digest)


def summary_of(records, published=PUBLISHED, task=TASK):
    return reduce(records, task, CONFIG, published)[0]


def timeline_of(strengths, **kw):
    return [record(f"step{s}", s, v, **kw) for s, v in zip(STEPS, strengths)]


def steps_named(text: str) -> set[int]:
    """Every training step a verdict names: stepN and 'step N,NNN'."""
    return {int(m.replace(",", "")) for m in re.findall(r"step ?(\d[\d,]*)", text)}


def lines_of(summary) -> list[str]:
    return summary["verdict"].split("\n")


def test_levels_have_one_sign_rule():
    levels = analysis.Levels(0.5, 0.3, 0.1)
    assert [levels.classify(v) for v in (0.9, -0.6, 0.35, -0.2, 0.05)] == [
        ("strong", 1), ("strong", -1), ("moderate", 1), ("weak", -1), ("none", 0)]  # fmt: skip
    assert levels.crosses(0.6) and not levels.crosses(-0.6) and levels.crosses(-0.6, sign=-1)
    assert levels.words(-0.6) == "strong, minus side" and levels.words(0.05) == "below the weak level 0.1"
    assert analysis.emergence_index([0.0, -0.7, 0.8], 0.5) == 2 and analysis.emergence_index([0.0, -0.7, 0.8], 0.5, sign=-1) == 1


def test_min_prompts_is_where_resamples_can_make_a_tail():
    assert analysis.min_prompts() == 5  # C(9, 5) = 126 distinct resamples; 4 prompts give C(7, 4) = 35 < 40


def test_sudden_emergence_is_called_with_an_interval_from_prompts_and_grid():
    s = summary_of(timeline_of([0, 0, 0, 0, 0, 0.05, 0.9, 0.95, 1.0, 1.0], null_p=0.01))
    assert s["emergence_point"]["revision"] == "step32000"
    assert s["emergence_point"]["fraction"] == pytest.approx(32000 / 143000)
    interval = s["emergence_interval"]
    assert (interval["after"], interval["by"]) == (16000, 32000)  # every resample crosses at 32000: the grid's gap is the interval
    assert s["bands"] == ["early"] and s["emergence_type"] == "early" and s["hypothesis"].startswith("H1")
    assert s["shape"]["shape"] == "sudden" and s["monotonic"]
    assert s["events"] == [{"event": "appear", "step": 32000}]
    assert s["claim"]["call"] == "emerges" and s["claim"]["reasons"] == []
    first, *rest = lines_of(s)
    assert first == "strength (even - odd, success rate) emerges: past +0.5 after step16000, by step32000 (95%), early in training."
    assert "when: after step16000 (11.2% of training), by step32000 (22.4% of training); a 95% interval over 400 resamples" in rest[0]
    assert all(re.match(r"^[a-z ]+: ", line) for line in rest), rest  # one labelled fact a line


def test_case1_a_leap_wholly_above_the_level_is_called_whatever_its_width():
    """+1.37 -> +8.21 nats between two checkpoints, per-prompt spread of several nats: the interval [+7, +9.7] is
    wider than the strong level 2 and lies wholly above it. Width and level are not comparable: it emerges."""
    rng = np.random.default_rng(0)
    task = replace(TASK, contrasts=(Contrast("strength", "even", "odd", "logprob_diff", (2.0, 1.0, 0.5)),))
    before, after = rng.normal(1.37, 1.5, 48), rng.normal(8.21, 4.0, 48)
    steps = [0, 64, 128, 256, 320, 448]
    means = [rng.normal(0.1, 0.5, 48), rng.normal(0.3, 0.8, 48), rng.normal(0.8, 1.0, 48), before, after, after + 0.5]
    records = [measured(f"step{a}", a, m, [0.0] * 48, metric="logprob_diff", null_p=0.01) for a, m in zip(steps, means)]
    demo = [Checkpoint(f"step{a}", a) for a in steps]
    s = summary_of(records, published=demo, task=task)
    point = s["emergence_point"]
    assert point["revision"] == "step320" and point["ci"][1] - point["ci"][0] > 2.0 and point["ci"][0] > 2.0  # wide, wholly above
    assert s["claim"]["call"] == "emerges" and (s["emergence_interval"]["after"], s["emergence_interval"]["by"]) == (256, 320)
    assert lines_of(s)[0].startswith("strength (even - odd, logprob diff) emerges: past +2 after step256, by step320 (95%)")
    reversed_ = summary_of([measured(f"step{a}", a, [0.0] * 48, m, metric="logprob_diff", null_p=0.01) for a, m in zip(steps, means)],
                           published=demo, task=task)  # fmt: skip
    assert reversed_["claim"]["call"] == "reversed" and reversed_["claim"]["side"] == "minus"
    assert lines_of(reversed_)[0].startswith("strength (even - odd, logprob diff) is reversed (the odd side specialises): past -2 after "
                                             "step256, by step320 (95%)")  # fmt: skip


def test_case1_a_borderline_crossing_is_not_called_and_says_more_prompts_settle_it():
    """+0.62 with an interval [+0.47, +0.78] against the level 0.5: many resamples stay below it."""
    rng = np.random.default_rng(1)
    task = replace(TASK, contrasts=(Contrast("strength", "even", "odd", "logprob_diff", (0.5, 0.3, 0.1)),))
    steps = [0, 64, 128, 256]
    values = [rng.normal(0.0, 0.3, 48), rng.normal(0.1, 0.3, 48), rng.normal(0.2, 0.3, 48), rng.normal(0.62, 0.55, 48)]
    s = summary_of([measured(f"step{a}", a, v, [0.0] * 48, metric="logprob_diff", null_p=0.01) for a, v in zip(steps, values)],
                   published=[Checkpoint(f"step{a}", a) for a in steps], task=task)  # fmt: skip
    assert s["emergence_point"]["revision"] == "step256"  # the mean crosses ...
    assert s["claim"]["call"] == "cannot call"  # ... but not in enough resamples of the prompts
    (reason,) = s["claim"]["reasons"]
    assert reason["kind"] == "resamples_split" and TAIL < reason["facts"]["share"] < 1 - TAIL
    assert reason["fix"]["kind"] == "prompts" and "more prompts (now 48)" in reason["fix"]["detail"]
    assert lines_of(s)[0].startswith("Cannot call strength (even - odd, logprob diff): ") and "to settle: more prompts" in lines_of(s)[0]


def test_case2_a_sparse_schedule_gives_the_gap_before_the_crossing_and_no_single_type():
    """`--checkpoints step256,step448` on a family ending at 448: the crossing lies in (256, 448], mid or late."""
    demo = [Checkpoint(f"step{a}", a) for a in (0, 128, 256, 288, 320, 448)]
    s = summary_of([record("step256", 256, 0.03, null_p=0.01), record("step448", 448, 0.95, null_p=0.01)], published=demo)
    assert s["claim"]["call"] == "emerges" and (s["emergence_interval"]["after"], s["emergence_interval"]["by"]) == (256, 448)
    assert s["bands"] == ["mid", "late"] and s["emergence_type"] == "none" and s["hypothesis"] is None
    first = lines_of(s)[0]
    assert "after step256, by step448 (95%), mid or late: not settled" in first and "H2" not in s["verdict"]
    stage = next(line for line in lines_of(s) if line.startswith("stage: "))
    assert "spans mid and late training; refine between step256 and step448 (python -m jobs.refine --sweep " in stage
    dense = summary_of([record("step256", 256, 0.03, null_p=0.01), record("step288", 288, 0.9, null_p=0.01),
                        record("step448", 448, 0.95, null_p=0.01)], published=demo)  # fmt: skip
    assert dense["bands"] == ["mid"] and dense["emergence_type"] == "mid"  # 257/448 = 57%, 288/448 = 64%: one band


def test_case3_refine_brackets_what_the_verdict_says_and_every_step_named_is_a_checkpoint():
    """Refine bisects the published revisions between the sweep's checkpoints; the rebuilt verdict's interval is that
    bracket (prompts that agree add nothing to the grid's gap); no step the verdict names is one nobody saved."""
    from pythia_sweep.run.refine import bisect_emergence

    published = [Checkpoint(f"step{a}", a) for a in (0, 64, 128, 192, 256, 272, 288, 304, 320, 384, 448)]
    truth = {0: 0.0, 64: 0.0, 128: 0.0, 192: 0.02, 256: 0.03, 272: 0.2, 288: 0.81, 304: 0.85, 320: 0.9, 384: 0.93, 448: 0.95}
    swept = [0, 64, 128, 192, 256, 320, 384, 448]
    records = {a: record(f"step{a}", a, truth[a], null_p=0.01) for a in truth}
    bracket = bisect_emergence(published, {f"step{a}": records[a].contrasts["strength"].value for a in swept},
                               lambda rev: records[int(rev[4:])].contrasts["strength"].value, 0.5)  # fmt: skip
    measured_now = sorted(set(swept) | {int(r[4:]) for r in bracket.fetched})
    s = summary_of([records[a] for a in measured_now], published=published)
    assert (bracket.below, bracket.above) == (s["emergence_interval"]["after_revision"], s["emergence_interval"]["by_revision"]) == ("step272", "step288")
    assert steps_named(s["verdict"]) <= set(measured_now), s["verdict"]


def test_case4_a_contrast_that_ends_strongly_negative_is_a_reversal_with_its_own_step():
    s = summary_of(timeline_of([0, 0, 0, 0, 0, -0.05, -0.9, -0.95, -1.0, -1.0], null_p=0.01))
    assert s["final_class"] == "strong, minus side"
    assert s["claim"]["call"] == "reversed" and s["emergence_point"]["revision"] == "step32000"
    assert (s["emergence_interval"]["after"], s["emergence_interval"]["by"]) == (16000, 32000)
    assert lines_of(s)[0].startswith("strength (even - odd, success rate) is reversed (the odd side specialises): past -0.5 after step16000")
    assert "never" not in s["verdict"]
    null = next(line for line in lines_of(s) if line.startswith("null: "))
    assert "the odd group" in null  # the reversal's null places the minus group, not the plus one


def test_case5_every_cannot_call_names_what_would_settle_it():
    cases = {
        "too few prompts": [record(f"step{a}", a, v, n=3, null_p=0.01) for a, v in zip(STEPS, [0] * 9 + [1.0])],
        "clean unanswered": timeline_of([0, 0, 0, 0, 0, 0.05, 0.9, 0.95, 1.0, 1.0], null_p=0.01, clean=0.2),
        "null ordinary": timeline_of([0, 0, 0, 0, 0, 0.05, 0.9, 0.95, 1.0, 1.0], null_p=0.19),
        "null too few sets": [replace(r, null=replace(r.null, k=15)) for r in
                              timeline_of([0, 0, 0, 0, 0, 0.05, 0.9, 0.95, 1.0, 1.0], null_p=1 / 16, possible=15)],  # fmt: skip
        "before the sweep": timeline_of([0.9, 0.9, 0.95, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], null_p=0.01)[2:],
        "resamples split": timeline_of([0, 0.1, 0.2, 0.3, 0.4, 0.42, 0.45, 0.46, 0.47, 0.52], null_p=0.01, wide=True),
    }
    kinds = {}
    for name, records in cases.items():
        s = summary_of(records)
        assert s["claim"]["call"] == "cannot call", (name, s["verdict"])
        reasons = s["claim"]["reasons"]
        assert reasons and all(r["fix"]["kind"] and r["fix"]["detail"] for r in reasons), (name, reasons)
        text = lines_of(s)
        assert len(text[0]) <= 200 and text[0].startswith("Cannot call strength"), (name, text[0])
        assert sum(line.startswith("to settle: ") for line in text) == len(reasons), (name, text)
        kinds[name] = [r["kind"] for r in reasons]
        json.dumps(s["claim"])  # reasons are data, JSON as they are
    assert kinds == {"too few prompts": ["too_few_prompts"], "clean unanswered": ["clean_not_answered"], "null ordinary": ["null_not_beaten"],
                     "null too few sets": ["null_not_beaten"], "before the sweep": ["before_first_checkpoint"],
                     "resamples split": ["resamples_split"]}  # fmt: skip
    sets = summary_of(cases["null too few sets"])["claim"]["reasons"][0]["fix"]
    assert sets == {"kind": "setting", "detail": 'null_pool = "all-layers" in the task: the null draws from every layer'}
    before = summary_of(cases["before the sweep"])["claim"]["reasons"][0]["fix"]
    assert before["kind"] == "checkpoints" and "--checkpoints step0," in before["detail"]


def test_case5_the_null_fix_knows_when_nothing_in_the_sweep_can_help():
    from pythia_sweep.report.claim import SweepContext, null_fix

    at_floor = {"at_floor": True, "k": 15, "size": 2, "possible": 15}
    assert null_fix(at_floor, SweepContext(null_pool="all-layers")).kind == "nothing"
    assert "holds only 15 other sets of 2 heads" in null_fix(at_floor, SweepContext(null_pool="all-layers")).detail
    assert null_fix(at_floor | {"possible": 300}, SweepContext()).detail.startswith("null_subsets = 19 or more")
    assert null_fix({"at_floor": False, "k": 20}, SweepContext()).kind == "nothing"


def test_case6_the_first_line_is_short_and_the_rest_one_labelled_fact_a_line():
    for strengths in ([0, 0, 0, 0, 0, 0.05, 0.9, 0.95, 1.0, 1.0], [0.0] * 10, [0, 0.6, 0.7, 0.2, 0.1, 0.6, 0.8, 0.3, 0.7, 0.9]):
        s = summary_of(timeline_of(strengths, null_p=0.01))
        first, *rest = lines_of(s)
        assert len(first) <= 200 and all(re.match(r"^[a-z ]+: ", line) for line in rest), s["verdict"]
        assert s["verdict_lines"]["answer"] == first and [f"{f['label']}: {f['fact']}" for f in s["verdict_lines"]["facts"]] == rest
        assert s["verdict_markdown"].startswith(f"**{first}**")


def test_case7_a_reason_is_said_once_and_read_as_data():
    s = summary_of(timeline_of([0, 0, 0, 0, 0, 0.05, 0.9, 0.95, 1.0, 1.0], null_p=0.19))
    assert s["null"]["status"] == "does not beat" and s["claim"]["call"] == "cannot call"
    (reason,) = s["claim"]["reasons"]
    assert reason["kind"] == "null_not_beaten" and reason["facts"]["p_value"] == 0.19 and reason["fix"]["kind"] == "nothing"
    assert s["verdict"].count("null p = 0.19") == 1 and not any(line.startswith("null: ") for line in lines_of(s))


def test_emergence_interval_spans_the_checkpoints_prompt_noise_allows():
    """Near the threshold the crossing moves with the prompts drawn: the interval covers several checkpoints, and a
    series whose prompts mostly never cross is not called."""
    s = summary_of(timeline_of([0, 0.1, 0.2, 0.3, 0.55, 0.6, 0.7, 0.8, 0.9, 0.95], null_p=0.01, wide=True))
    interval = s["emergence_interval"]
    assert interval["after"] < s["emergence_point"]["step"] <= interval["by"]
    barely = summary_of(timeline_of([0, 0, 0, 0, 0, 0, 0, 0, 0, 0.52], null_p=0.01, wide=True))
    assert barely["emergence_point"]["step"] == 143000 and barely["claim"]["call"] == "cannot call"
    assert barely["claim"]["reasons"][0]["kind"] == "resamples_split"


def test_gradual_late_emergence():
    s = summary_of(timeline_of([0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.32, 0.3, 0.9], null_p=0.01))
    assert s["emergence_point"]["step"] == 143000 and s["bands"] == ["late"] and s["emergence_type"] == "late"
    assert s["hypothesis"].startswith("H2")
    near = summary_of(timeline_of([0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.38, 0.45, 0.9], null_p=0.01))
    assert near["emergence_interval"]["after"] == 64000 and near["bands"] == ["mid", "late"]  # 0.45 at 128000 crosses in some resamples
    assert near["hypothesis"] is None
    s = summary_of(timeline_of([0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.38, 0.45, 0.55], null_p=0.01))
    assert s["shape"]["shape"] == "gradual"


def test_mid_emergence_uses_the_real_last_step():
    s = summary_of([record(f"step{a}", a, v, null_p=0.01) for a, v in zip([0, 50000, 80000, 143000], [0, 0.2, 0.8, 0.9])])
    assert s["emergence_type"] == "mid" and s["hypothesis"].startswith("H3")  # (50000, 80000] / 143000 = 35-56%, not 5-8%


def test_fluctuating_timeline():
    s = summary_of(timeline_of([0, 0.6, 0.7, 0.2, 0.1, 0.6, 0.8, 0.3, 0.7, 0.9], null_p=0.01))
    assert not s["monotonic"]
    assert [e["event"] for e in s["events"]] == ["appear", "disappear", "reappear", "disappear", "reappear"]
    assert "not monotonic" in s["verdict"]


def test_never_emerges():
    s = summary_of(timeline_of([0.0] * 10, null_p=0.5))
    assert s["emergence_point"] is None and s["emergence_type"] == "none"
    assert s["shape"]["shape"] == "flat" and s["claim"]["call"] == "no emergence"
    assert lines_of(s)[0] == ("No emergence of strength (even - odd, success rate): within ±0.5 at every checkpoint in at least 97.5% of "
                              "prompt resamples (final +0.00).")  # fmt: skip
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
    assert "by step320 (71.4% of training)" in s["verdict"]
    assert summary_of(records, published=None)["final_step"] == 448  # no published list: the last ok record, not step999
    assert final_step(None, []) is None and final_step(demo, [999]) == 448


def test_case5_no_null_possible_is_a_stated_fact_not_a_failed_test():
    s = summary_of(timeline_of([0, 0, 0, 0, 0, 0.05, 0.9, 0.95, 1.0, 1.0], possible=0))
    assert s["null"]["status"] == "no null possible" and "group_beats_null_at_final" not in s
    assert s["claim"]["call"] == "emerges" and "null: no other set of" in s["verdict"]


def test_case5_a_clean_prompt_the_model_fails_is_flagged_and_blocks_the_call():
    s = summary_of(timeline_of([0, 0, 0, 0, 0, 0.05, 0.9, 0.95, 1.0, 1.0], null_p=0.01, clean=0.2))
    assert s["clean"]["answered"] is False and s["claim"]["call"] == "cannot call"
    assert "the model does not answer the clean prompt: success rate 0.21" in s["verdict"]
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
    window = analysis.rise_shape(coarse, values)
    assert window["anchor"] in coarse and analysis.doubling_words(window) == "the doubling of training steps to step 448"


def test_case7_the_null_is_read_on_the_headlines_own_metric():
    from pythia_sweep.measure.scoring import null_test
    from pythia_sweep.task.definition import Contrast

    null = NullStats(k=20, size=6, groups={"g": {"logprob_diff": NullPosition(percentile=99.0, p_value=0.01),
                                                 "prob_diff": NullPosition(percentile=60.0, p_value=0.4)}})  # fmt: skip
    test = null_test(null, Contrast("gt", "g", "baseline", "prob_diff", (0.5, 0.3, 0.1)), {"possible": 100})
    assert test["metric"] == "prob_diff" and test["p_value"] == 0.4 and test["status"] == "does not beat"
    assert null_test(null, Contrast("gt", "g", "baseline", "logprob_diff", (1, 0.5, 0.2)), {"possible": 100})["p_value"] == 0.01


def test_a_group_above_every_null_set_is_told_apart_from_an_ordinary_one_when_too_few_sets_exist():
    """Two heads of an 8-head model have 15 rivals: above all of them, p is 1/16 and cannot reach 0.05. The null still
    does not pass (the claim cannot be called), but the statement says why: too few sets, not an unremarkable group."""
    from pythia_sweep.measure.scoring import null_test
    from pythia_sweep.task.definition import Contrast

    contrast = Contrast("c", "g", "baseline", "logprob_diff", (1, 0.5, 0.2))
    top = NullStats(k=15, size=2, groups={"g": {"logprob_diff": NullPosition(percentile=100.0, p_value=1 / 16)}})
    test = null_test(top, contrast, {"possible": 15})
    assert test["status"] == "does not beat"
    assert test["statement"] == ("the g group is above all 15 random 2-head sets on logprob diff, but 15 sets cannot give a null p "
                                 "at or below 0.05 (the smallest possible is 0.062; the pool holds only 15 such sets)")  # fmt: skip
    assert "null_subsets = 19 or more could" in null_test(top, contrast, {"possible": 300})["statement"]
    middling = replace(top, groups={"g": {"logprob_diff": NullPosition(percentile=50.0, p_value=0.5)}})
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
    assert "identical weights: step64000 = step128000 = step143000: measured once, as step143000" in s["verdict"]


def test_failed_revisions_are_reported_and_excluded():
    records = timeline_of([0, 0, 0, 0, 0, 0.05, 0.9, 0.95, 1.0, 1.0], null_p=0.01)
    records[4] = record("step8000", 8000, 0.0, status="failed", error="RevisionNotPublished: x")
    s = summary_of(records)
    assert s["quality"]["failed_revisions"] == [{"revision": "step8000", "error": "RevisionNotPublished: x"}]
    assert s["usable_checkpoints"] == 9 and "failed: step8000 (left out)" in s["verdict"]


def test_two_methods_with_identical_numbers_are_stated_once():
    config = SweepConfig(task="tasks/decimal-robust.toml", bootstrap_resamples=400, method="both")
    records = timeline_of([0, 0, 0, 0, 0, 0.05, 0.9, 0.95, 1.0, 1.0], null_p=0.01)
    for r in records:
        r.contrasts["upstream/strength"] = replace(r.contrasts["strength"], method="upstream")
    s = reduce(records, TASK, config, PUBLISHED)[0]
    assert s["verdict"].count("emerges") == 1 and "method upstream: identical numbers" in s["verdict"]


def test_null_position_exact_p_value_is_never_zero():
    assert null_position(1.0, [0.0] * 10)["p_value"] == 1 / 11


def test_case8_a_sweep_recorded_before_the_rule_gives_its_numbers_to_the_owner():
    """Older sweeps measured the earliest twin (step64000) and recorded the final step as its duplicate: the
    numbers now belong to step143000, where they are analysed, and step64000 is the duplicate."""
    late = timeline_of([0, 0, 0, 0, 0, 0.05, 0.9, 0.95, 1.0, 1.0], null_p=0.01)
    late[-3] = replace(late[-3], weights_digest="final")
    late[-1] = CheckpointRecord(**IDENTITY, revision="step143000", step=143000, status="duplicate", weights_digest="final",
                                duplicate_of=("step64000",))  # fmt: skip
    measured = late[-3].contrasts["strength"].success_rate.value
    summary, frame, long = reduce(upgrade_records(late, PUBLISHED), TASK, CONFIG, PUBLISHED)  # as the reader reads an untagged sweep
    final = frame.filter(frame["revision"] == "step143000").row(0, named=True)
    assert final["analysed"] and final["strength/success_rate"] == measured  # step64000's numbers, now its owner's
    assert frame.filter(frame["revision"] == "step64000")["analysed"].item() is False
    assert summary["final_value"] == measured and set(long["revision"]) >= {"step143000"}
    assert "step64000" not in set(long["revision"])  # one measurement, one place


def test_a_sweep_without_null_sets_says_so():
    s = summary_of(timeline_of([0, 0, 0, 0, 0, 0.05, 0.9, 0.95, 1.0, 1.0]))  # k = 0, null sets possible
    assert s["null"]["status"] == "not run"
    assert "null: the sweep drew no random head sets (null_subsets = 0)" in s["verdict"]
