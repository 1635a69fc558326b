"""What the numbers support, in words: a claim per series, and the verdict whose first words are that claim.

A series earns one of three calls (`claim`):
  emerges        it crosses the strong level, and the evidence holds: in at least 97.5% of prompt resamples it
                 crosses too (so the emergence step has a 95% interval within the sweep), the intervals at the
                 crossing and at the checkpoint before it are no wider than the strong level, the model answers
                 the clean prompt, and (primary method) the group is not outdone by the random head sets at the
                 final checkpoint (it beats them, or no null is possible or drawn, which the verdict says);
  no emergence   it never crosses, and could not have: at most 2.5% of prompt resamples cross, the final
                 interval is no wider than the strong level, and the clean prompt is answered;
  cannot call    anything else, with every reason named.
The null is read by scoring.null_test alone; a group that is all of its pool has "no null possible", a stated
fact, never a failed test.
"""

from __future__ import annotations

import polars as pl

from pythia_sweep import analysis

CLEAN_ANSWERED = 0.5  # the clean prompt counts as answered when its success rate is at least this
TAIL = 0.025  # of prompt resamples: (1 - 0.95) / 2


def describe_contrast(task, res: dict, same_as: list[str] = ()) -> str:
    """'strength (even - odd, success rate)', from the task's contrast and the method the series belongs to;
    `same_as` names the other methods whose numbers are identical (stated once)."""
    c = next(c for c in task.contrasts if c.name == res["base_contrast"])
    same = f"; {' and '.join(same_as)} identical" if same_as else ""
    return f"{res['contrast']} ({c.plus} - {c.minus}, {c.metric.replace('_', ' ')}{same})"


def clean_check(usable: pl.DataFrame) -> dict | None:
    """Whether the model answers the clean prompt (the patch's source) at the final analysed checkpoint."""
    if "clean/success_rate" not in usable.columns or not len(usable):
        return None
    rates = [v for v in usable["clean/success_rate"].to_list() if v is not None]
    if not rates:
        return None
    final = rates[-1]
    return {"final": final, "min": min(rates), "max": max(rates), "answered": final >= CLEAN_ANSWERED, "level": CLEAN_ANSWERED}


def claim(res: dict, clean: dict | None, null: dict | None) -> dict:
    """The call a series earns (see the module docstring) and, for "cannot call", every reason."""
    strong = res["levels"][0]
    point, interval = res["emergence_point"], res["emergence_step_interval"]
    reasons = []
    if res["final_value"] is None:
        return {"call": "cannot call", "reasons": ["no analysed checkpoint has this number"]}
    if clean is not None and not clean["answered"]:
        reasons.append(f"the model does not answer the clean prompt (clean success rate {clean['final']:.2f} at the final "
                       f"checkpoint, {clean['min']:.2f}-{clean['max']:.2f} over the sweep, below {clean['level']:g}), "
                       "so there is no clean answer for the patch to restore")  # fmt: skip
    if interval is None:
        reasons.append("no interval on the emergence step (fewer than two prompts, or a side not decoded)")
    if point:
        if interval is not None and interval["high"] is None:
            reasons.append(f"in {1 - interval['share_emerging']:.0%} of {interval['resamples']} resamples of its "
                           f"{interval['prompts']} prompts it never crosses the strong level {strong:g}")  # fmt: skip
        around = [(point["revision"], point["ci"])] + ([(point["previous_revision"], point["previous_ci"])] if point["previous_revision"] else [])
        for revision, (low, high) in around:  # the crossing and the checkpoint before it: both must be told apart
            if analysis.interval_too_wide(low, high, strong):
                shown = "missing" if low is None or high is None else f"[{low:+.2f}, {high:+.2f}]"
                reasons.append(f"the interval at {revision} is {shown}, wider than the strong level {strong:g}")
        if null is not None and null["status"] == "does not beat":
            reasons.append(f"{null['statement']} at the final checkpoint")
        call = "emerges"
    else:
        if interval is not None and interval["share_emerging"] > TAIL:
            reasons.append(f"in {interval['share_emerging']:.0%} of {interval['resamples']} resamples of its {interval['prompts']} "
                           f"prompts it does cross the strong level {strong:g}")  # fmt: skip
        low, high = res["final_ci"] or (None, None)
        if analysis.interval_too_wide(low, high, strong):
            shown = "missing" if low is None or high is None else f"[{low:+.2f}, {high:+.2f}]"
            reasons.append(f"the final interval is {shown}, wider than the strong level {strong:g}")
        call = "no emergence"
    return {"call": "cannot call" if reasons else call, "reasons": reasons, "seen": call}


def _steps(interval: dict) -> str:
    if interval["low"] == interval["high"]:
        return f"95%: at step {interval['low']:,} over {interval['resamples']} prompt resamples"
    return f"95%: between step {interval['low']:,} and step {interval['high']:,} over {interval['resamples']} prompt resamples"


def _sentence(task, res: dict, also: list[str]) -> str:
    """The first sentence for one headline series: its claim, then what was seen."""
    label = describe_contrast(task, res, also)
    strong, weak = res["levels"][0], res["levels"][2]
    point, interval, shape = res["emergence_point"], res["emergence_step_interval"], res["shape"]
    where = ""
    if point:
        where = f"{point['revision']} (step {point['step']:,}" + (f", {100 * point['fraction']:.1f}% of training" if point["fraction"] is not None else "")
    call = res["claim"]
    if call["call"] == "emerges":
        share = f", {shape['share']:.0%} of the rise within one doubling of training steps" if shape["share"] is not None else ""
        return (f"{label} emerges at {where}; {_steps(interval)}): first above the strong level {strong:g} "
                f"({point['value']:+.2f}, interval [{point['ci'][0]:+.2f}, {point['ci'][1]:+.2f}]); {res['emergence_type']} "
                f"emergence, {shape['shape']} rise{share}; the methodology reads a {res['emergence_type']} emergence as "
                f"{res['hypothesis']!r}.")  # fmt: skip
    if call["call"] == "no emergence":
        klass = res["final_class"]
        described = f"below the weak level {weak:g}" if klass == "none" else klass
        return (f"No emergence of {label}: it never exceeds the strong level {strong:g} (final {res['final_value']:+.2f}, "
                f"{described}; {interval['share_emerging']:.0%} of prompt resamples cross).")  # fmt: skip
    seen = (f"it first exceeds the strong level {strong:g} at {where}: {point['value']:+.2f})" if point else
            f"it never exceeds the strong level {strong:g} (final {res['final_value']:+.2f})" if res["final_value"] is not None else "")  # fmt: skip
    return f"Cannot call {label}: {'; '.join(call['reasons'])}." + (f" As measured, {seen}." if seen else "")


def verdict(summary: dict, task) -> str:
    """A short plain-language answer: the headline's claim first (per method; methods with identical numbers
    once), then the null, the evidence, the shape's caveats and the checkpoints left out."""
    q = summary["quality"]
    caveats = []
    if q["failed_revisions"]:
        n = len(q["failed_revisions"])
        caveats.append(f"{n} revision{'s' * (n != 1)} failed: " + ", ".join(f["revision"] for f in q["failed_revisions"]) + ".")
    for d in q["duplicates"]:
        owner = d["measurement_belongs_to"]
        caveats.append(f"Identical weights: {' = '.join(d['members'])} ("
                       + (f"measured once, as {owner}; the others left out)." if owner else "which step they were saved at is unknown: all left out).")) # fmt: skip
    if summary["usable_checkpoints"] == 0:
        return " ".join(["Cannot call: no usable checkpoint (every revision failed or was left out as a duplicate).", *caveats])
    headline = [res for res in summary["results"].values() if res["base_contrast"] == task.headline.name]
    same_as: dict[str, list[str]] = {}  # the first method of each distinct series -> the methods it also stands for
    stated = []
    for res in headline:  # the headline contrast, for each method (the others: summary.json, the plots)
        twin = next((s for s in stated if s["series"] == res["series"]), None)
        if twin is None:
            stated.append(res)
        else:
            same_as.setdefault(twin["key"], []).append(res["method"])
    parts = []
    for res in stated:
        parts.append(_sentence(task, res, same_as.get(res["key"], [])))
        if not res["monotonic"] and res["events"]:
            parts.append("It is not monotonic: " + ", ".join(f"{e['event']} at step {e['step']:,}" for e in res["events"]) + ".")
        elif not res["monotonic"]:
            parts.append(f"It is not monotonic: it falls back by more than {res['levels'][2]:g} after a rise, below the strong level.")
    if summary.get("discovery"):
        parts.append(summary["discovery"]["statement"])
    null = summary["null"]
    cited = any(null["statement"] in reason for res in stated for reason in res["claim"]["reasons"])
    if null["status"] in ("beats", "does not beat") and not cited:
        parts.append(f"At the final checkpoint {null['statement']}.")
    elif null["status"] == "no null possible":
        parts.append(f"No null control is possible: {null['statement']}.")
    elif null["status"] in ("not run", "not applicable"):
        parts.append(f"No null control: {null['statement']}.")
    clean = summary["clean"]
    if clean and clean["answered"]:
        parts.append(f"The model answers the clean prompt (clean success rate {clean['final']:.2f} at the final checkpoint).")
    if summary.get("evidence"):
        parts.append(summary["evidence"]["statement"])
    if summary.get("heads"):
        parts.append(summary["heads"]["statement"])
    wide = q["intervals_too_wide"]
    if wide:
        n_prompts = summary.get("n_prompts")
        parts.append(f"The headline interval is wider than the strong level {task.headline.threshold:g} (or missing) at {len(wide)} "
                     f"of {summary['usable_checkpoints']} checkpoints" + (f" ({n_prompts} distinct prompts)." if n_prompts else "."))  # fmt: skip
    return " ".join(parts + caveats)
