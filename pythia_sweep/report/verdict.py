"""What the numbers support: a claim per series, and the verdict that says it.

The rule for a call (`claim`), on one contrast's series over the analysed checkpoints:
  when         The first crossing of the strong level is placed by resampling prompts (the same resample at every
               checkpoint) *and* by the checkpoint grid: a crossing first seen at checkpoint X happened after the
               checkpoint before X. Its 95% interval is (the checkpoint before the 2.5% quantile of the resamples'
               first crossings, their 97.5% quantile]: `analysis.crossing_interval`. Refine narrows the grid's part.
  emerges      at least 97.5% of resamples cross +strong, the model answers the clean prompt, the crossing is not
               already there at the first checkpoint analysed, and the group beats the random head sets (patched by
               the primary method) at the final checkpoint, or no null is possible (said);
  reversed     the same, on the minus side (-strong): the minus side's specialisation, a finding with its own step;
  no emergence at most 2.5% of resamples cross either level, and the clean prompt is answered;
  cannot call  anything else, each reason a `Reason` that carries what would settle it (`Fix`).
No rule compares an interval's width with a level: a width is a spread in the metric's units, a level a point on
that scale. With fewer prompts than `analysis.min_prompts()` no 95% interval exists, so nothing is called.
The stage (early / mid / late) and the methodology's reading of it are given only when the whole interval lies in
one band of training; otherwise the verdict names the bands and the refine that would tell them apart.

Reasons are data (kind, numbers, fix); words are made last, by `Verdict`: one first line that is the answer (at most
200 characters), then labelled lines, one fact each, the same on the terminal, the page, MLflow and summary.json.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import polars as pl

from pythia_sweep import analysis
from pythia_sweep.analysis import SIDES, TAIL, Levels
from pythia_sweep.measure.scoring import NULL_LEVEL, null_test
from pythia_sweep.stats import NullStats

BAND_WORDS = {"early": "the first 25%", "mid": "the middle 50%", "late": "the last 25%"}
CLEAN_ANSWERED = 0.5  # the clean prompt counts as answered when its success rate is at least this
FIRST_LINE_MAX = 200  # characters: the answer, read at a glance


@dataclass(frozen=True)
class Fix:
    """What would settle a "cannot call": a command to run, a setting to change, prompts or checkpoints to add,
    or nothing this sweep can do (`detail` then says why)."""

    kind: str  # "refine" | "setting" | "prompts" | "checkpoints" | "nothing"
    detail: str

    def words(self) -> str:
        return {"refine": "run {}", "setting": "set {}", "nothing": "nothing in this sweep can: {}"}.get(self.kind, "{}").format(self.detail)


@dataclass(frozen=True)
class Reason:
    """Why a series cannot be called: its kind, the numbers behind it, and its fix. `words` and `short` are made
    from these alone; no code reads them back."""

    kind: str
    facts: dict
    fix: Fix

    def words(self) -> str:
        return REASON_WORDS[self.kind](self.facts)

    def short(self) -> str:
        return REASON_SHORT[self.kind](self.facts)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "facts": self.facts, "fix": asdict(self.fix), "words": self.words(), "fix_words": self.fix.words()}


def _level(f: dict) -> str:
    return f"{f['sign'] * f['level']:+g}"


REASON_WORDS = {
    "no_numbers": lambda f: "no analysed checkpoint has this number",
    "clean_not_answered": lambda f: (f"the model does not answer the clean prompt: success rate {f['final']:.2f} at the final checkpoint "
                                     f"({f['min']:.2f}-{f['max']:.2f} over the sweep; answered means at least {f['level']:g}), so there is "
                                     "no clean answer for the patch to restore"),  # fmt: skip
    "no_interval": lambda f: f"no interval on the crossing step: {f['why']}",
    "too_few_prompts": lambda f: (f"{f['prompts']} prompts cannot give a 95% interval: their resamples hold fewer than "
                                  f"{round(1 / TAIL)} distinct draws ({f['needed']} prompts are the fewest that can)"),  # fmt: skip
    "resamples_split": lambda f: (f"{f['share']:.1%} of {f['resamples']} resamples of the {f['prompts']} prompts cross {_level(f)}: a call "
                                  f"needs at least {1 - TAIL:.1%} (crosses) or at most {TAIL:.1%} (does not)"),  # fmt: skip
    "before_first_checkpoint": lambda f: (f"{f['share']:.1%} of resamples are past {_level(f)} already at the first checkpoint analysed, "
                                          f"{f['revision']}: when it crossed lies before the sweep"),  # fmt: skip
    "null_not_beaten": lambda f: f"{f['statement']} at the final checkpoint",
}
REASON_SHORT = {
    "no_numbers": lambda f: "nothing measured",
    "clean_not_answered": lambda f: "the model does not answer the clean prompt",
    "no_interval": lambda f: "no interval on the step",
    "too_few_prompts": lambda f: f"{f['prompts']} prompts are too few for a 95% interval",
    "resamples_split": lambda f: f"{f['share']:.0%} of prompt resamples cross {_level(f)}",
    "before_first_checkpoint": lambda f: f"past {_level(f)} already at the first checkpoint",
    "null_not_beaten": lambda f: ("too few null sets for p <= 0.05" if f["at_floor"] else "the group does not stand out from random head sets"),
}


@dataclass(frozen=True)
class Claim:
    """The call a series earns: "emerges", "reversed", "no emergence" or "cannot call"; `sign` the side whose crossing
    is called or measured (+1 plus, -1 minus, None where no resample crosses), `reasons` why not called."""

    call: str
    sign: int | None = None
    reasons: tuple[Reason, ...] = ()

    @property
    def called(self) -> bool:
        return self.call in ("emerges", "reversed")

    def to_dict(self) -> dict:
        return {"call": self.call, "side": SIDES.get(self.sign), "reasons": [r.to_dict() for r in self.reasons]}


@dataclass(frozen=True)
class SweepContext:
    """What a fix names, from the sweep around the series: the command that refines this sweep, the earliest
    published revision, the task's null pool and whether a wider one exists."""

    refine: str = "python -m jobs.refine --sweep <sweep>"
    earliest_published: str | None = None
    null_pool: str = "group-layers"


def clean_check(usable: pl.DataFrame) -> dict | None:
    """Whether the model answers the clean prompt (the patch's source) at the final analysed checkpoint."""
    if "clean/success_rate" not in usable.columns or not len(usable):
        return None
    rates = [v for v in usable["clean/success_rate"].to_list() if v is not None]
    if not rates:
        return None
    final = rates[-1]
    return {"final": final, "min": min(rates), "max": max(rates), "answered": final >= CLEAN_ANSWERED, "level": CLEAN_ANSWERED}


def null_fix(null: dict, context: SweepContext) -> Fix:
    """What would let the null speak: more sets, a wider pool, or nothing (a group no better than random sets is the
    finding; a model with too few heads cannot give p <= NULL_LEVEL)."""
    needed = math.ceil(1 / NULL_LEVEL) - 1
    if not null["at_floor"]:
        return Fix("nothing", "random head sets of this size do as well at the final checkpoint: that is the finding, not a gap")
    possible = null.get("possible")
    if possible is None or possible > null["k"]:
        return Fix("setting", f"null_subsets = {max(needed, null['k'] + 1)} or more in the run config (the pool holds "
                              f"{'more' if possible is None else possible} sets)")  # fmt: skip
    if context.null_pool != "all-layers":
        return Fix("setting", 'null_pool = "all-layers" in the task: the null draws from every layer')
    return Fix("nothing", f"the model holds only {possible} other sets of {null.get('size')} heads, and p <= {NULL_LEVEL:g} needs at "
                          f"least {needed}: a model with more heads (or a smaller group)")  # fmt: skip


def claim(res: dict, clean: dict | None, nulls: dict[int, dict] | None, context: SweepContext = SweepContext()) -> Claim:
    """The call a series earns (the module docstring's rule). `res["sides"]` holds each side's crossing interval;
    `nulls` the null test for each side's group, by side name (None: no null is read)."""
    if res["final_value"] is None:
        return Claim("cannot call", None, (Reason("no_numbers", {}, Fix("checkpoints", "rerun the sweep: it resumes the failed revisions")),))
    blockers = []
    if clean is not None and not clean["answered"]:
        blockers.append(Reason("clean_not_answered", {k: clean[k] for k in ("final", "min", "max", "level")},
                               Fix("nothing", "the task's clean prompts, answers or success rule, or a model that answers them")))  # fmt: skip
    crossings = {sign: res["sides"][SIDES[sign]]["interval"] for sign in SIDES}
    if crossings[1] is None:
        blockers.append(Reason("no_interval", {"why": "fewer than two prompts, or a side of the contrast not decoded"},
                               Fix("prompts", "at least two prompts, with both sides of the contrast decoded")))  # fmt: skip
        return Claim("cannot call", next((s for s in SIDES if res["sides"][SIDES[s]]["point"]), None), tuple(blockers))
    prompts, needed = crossings[1]["prompts"], analysis.min_prompts()
    if prompts < needed:
        blockers.append(Reason("too_few_prompts", {"prompts": prompts, "needed": needed},
                               Fix("prompts", f"at least {needed} prompts: the task's [prompts] count, or more templates")))  # fmt: skip
    level = res["levels"][0]
    outcome = {s: "crosses" if c["share_crossing"] >= 1 - TAIL else "stays" if c["share_crossing"] <= TAIL else "split" for s, c in crossings.items()}

    def split(sign: int) -> Reason:
        c = crossings[sign]
        return Reason("resamples_split", {"share": c["share_crossing"], "resamples": c["resamples"], "prompts": c["prompts"], "sign": sign,
                                          "level": level},  # fmt: skip
                      Fix("prompts", f"more prompts (now {c['prompts']}): the task's [prompts] count, or more templates"))

    sign = next((s for s in SIDES if outcome[s] == "crosses"), None)
    if sign is None:
        reasons = blockers + [split(s) for s in SIDES if outcome[s] == "split"]
        measured = next((s for s in SIDES if outcome[s] == "split"), None)
        return Claim("cannot call" if reasons else "no emergence", measured, tuple(reasons))
    c, reasons = crossings[sign], list(blockers)
    if c["from_first_checkpoint"]:
        first = res["revisions"][0]
        fix = (Fix("nothing", f"{first} is the earliest published revision: it is past the level from the start")
               if first == context.earliest_published else
               Fix("checkpoints", f"sweep earlier revisions too (--checkpoints {context.earliest_published or 'step0'},...)"))  # fmt: skip
        reasons.append(Reason("before_first_checkpoint", {"sign": sign, "level": level, "revision": first, "share": c["share_at_first"]}, fix))
    null = (nulls or {}).get(SIDES[sign])
    if null is not None and null["status"] == "does not beat":
        reasons.append(Reason("null_not_beaten", {k: null.get(k) for k in ("statement", "p_value", "k", "size", "possible", "at_floor", "group")},
                              null_fix(null, context)))  # fmt: skip
    return Claim(("emerges" if sign == 1 else "reversed") if not reasons else "cannot call", sign, tuple(reasons))


def nulls_by_side(null_record: NullStats | None, contrast, settings: dict | None) -> dict[str, dict]:
    """The null test for each side's group: the plus group for an emergence, the minus group for a reversal (a
    reversal against the baseline has no group to place among random sets: "not applicable", said)."""
    out = {"plus": null_test(null_record, contrast, settings)}
    if contrast.minus == "baseline":
        out["minus"] = {"status": "not applicable", "group": contrast.plus, "statement": (
            f"a reversal is the {contrast.plus} group pushing the answer below the baseline; the null places a group above random sets, "
            "so it has no reading here")}  # fmt: skip
    else:
        out["minus"] = null_test(null_record, replace(contrast, plus=contrast.minus, minus=contrast.plus), settings)
    return out


# --- words ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """The verdict as people read it: `answer`, the first line (the call, when, how sure; at most FIRST_LINE_MAX
    characters), then `facts`, one labelled fact a line."""

    answer: str
    facts: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def text(self) -> str:
        return "\n".join([self.answer] + [f"{label}: {fact}" for label, fact in self.facts])

    def markdown(self) -> str:
        """For MLflow's run description (markdown: single newlines would run the lines together)."""
        return f"**{self.answer}**\n\n" + "\n".join(f"- **{label}:** {fact}" for label, fact in self.facts)

    def to_dict(self) -> dict:
        return {"answer": self.answer, "facts": [{"label": label, "fact": fact} for label, fact in self.facts]}


def describe_contrast(task, res: dict) -> str:
    """'strength (even - odd, success rate)', from the task's contrast and the method the series belongs to."""
    c = next(c for c in task.contrasts if c.name == res["base_contrast"])
    return f"{res['contrast']} ({c.plus} - {c.minus}, {c.metric.replace('_', ' ')})"


def _percent(step: int | None, final_step: int | None) -> str:
    return f" ({100 * step / final_step:.1f}% of training)" if step is not None and final_step else ""


def when_words(interval: dict, final_step: int | None) -> str:
    """The crossing's span in words: after the checkpoint before, by the last resampled crossing."""
    after = f"after {interval['after_revision']}{_percent(interval['after'], final_step)}, " if interval["after"] is not None else ""
    return (f"{after}by {interval['by_revision']}{_percent(interval['by'], final_step)}; a 95% interval over {interval['resamples']} "
            f"resamples of {interval['prompts']} prompts, widened to the checkpoint before the earliest crossing")  # fmt: skip


def _answer(label: str, res: dict, claim_: Claim, task) -> str:
    """The first line: what, when, how sure."""
    levels = Levels.of(res["levels"])
    if claim_.called:
        interval = res["emergence_interval"]
        bands = res["bands"]
        stage = f"{bands[0]} in training" if len(bands) == 1 else f"{' or '.join(bands)}: not settled"
        c = next(c for c in task.contrasts if c.name == res["base_contrast"])
        what = "emerges" if claim_.sign == 1 else f"is reversed (the {c.minus} side specialises)"
        return (f"{label} {what}: past {claim_.sign * levels.strong:+g} after {interval['after_revision']}, by {interval['by_revision']} "
                f"(95%), {stage}.")  # fmt: skip
    if claim_.call == "no emergence":
        return (f"No emergence of {label}: within ±{levels.strong:g} at every checkpoint in at least {1 - TAIL:.1%} of prompt resamples "
                f"(final {res['final_value']:+.2f}).")  # fmt: skip
    first = claim_.reasons[0]
    more = f" (and {len(claim_.reasons) - 1} more)" if len(claim_.reasons) > 1 else ""
    line = f"Cannot call {label}: {first.short()}{more}; to settle: {first.fix.words()}."
    return line if len(line) <= FIRST_LINE_MAX else f"Cannot call {label}: {first.short()}{more}."


def series_facts(res: dict, claims: dict[str, Claim], final_step: int | None, context: SweepContext) -> list[tuple[str, str]]:
    """The labelled lines for one series: when, stage, the crossing as measured, the final value, the shape, the
    other side, and (cannot call) each reason with its fix."""
    claim_ = claims[res["key"]]
    levels = Levels.of(res["levels"])
    facts = []
    if claim_.called:
        interval = res["emergence_interval"]
        facts.append(("when", when_words(interval, final_step)))
        bands = res["bands"]
        if len(bands) == 1:
            facts.append(("stage", f"{bands[0]}: the whole interval lies in {BAND_WORDS[bands[0]]} of training; the methodology reads it "
                                   f"as {res['hypothesis']!r}"))  # fmt: skip
        else:
            facts.append(("stage", f"not settled: the interval spans {' and '.join(bands)} training; refine between "
                                   f"{interval['after_revision']} and {interval['by_revision']} ({context.refine}) would tell them apart"))  # fmt: skip
    side = SIDES[claim_.sign] if claim_.sign else "plus"
    point = res["sides"][side]["point"]
    if point:
        before = (f", after {point['previous_value']:+.2f} at {point['previous_revision']}" if point["previous_revision"] else
                  ", at the first checkpoint analysed")  # fmt: skip
        share = (res["sides"][side]["interval"] or {}).get("share_crossing")
        crossing = (f"the mean over prompts is first past {(1 if side == 'plus' else -1) * levels.strong:+g} at {point['revision']}: "
                    f"{point['value']:+.2f}, 95% [{point['ci'][0]:+.2f}, {point['ci'][1]:+.2f}]{before}")  # fmt: skip
        facts.append(("crossing", crossing + (f"; {share:.1%} of prompt resamples cross" if share is not None and not claim_.called else "")))
    elif claim_.call != "no emergence":
        facts.append(("crossing", f"the mean over prompts never passes ±{levels.strong:g}"))
    low, high = res["final_ci"] or (None, None)
    interval_words = f", 95% [{low:+.2f}, {high:+.2f}]" if low is not None and high is not None else ""
    facts.append(("final", f"{res['final_value']:+.2f} at {res['final_revision']}{interval_words}: {levels.words(res['final_value'])}"))
    if claim_.call == "no emergence":
        shares = {s: (res["sides"][s]["interval"] or {}).get("share_crossing") for s in ("plus", "minus")}
        facts.append(("resamples", f"{shares['plus']:.1%} of prompt resamples cross +{levels.strong:g}, {shares['minus']:.1%} cross "
                                   f"-{levels.strong:g} (no emergence needs at most {TAIL:.1%} each)"))  # fmt: skip
    shape = res["shape"]
    if shape["share"] is not None and shape["shape"] != "flat":
        fell = any(e["event"] == "disappear" for e in res["events"])
        monotonic = "monotonic" if res["monotonic"] else "not monotonic: " + (
            ", ".join(f"{e['event']} at step {e['step']:,}" for e in res["events"]) if fell else
            f"it falls back by more than the weak level {levels.weak:g} from a peak, without crossing back over the strong level")  # fmt: skip
        facts.append(("shape", f"{shape['shape']}: {shape['share']:.0%} of the rise within {analysis.doubling_words(shape)}; {monotonic}"))
    if claim_.called:
        other = SIDES[-claim_.sign]
        o = res["sides"][other]["interval"]
        if o and o["share_crossing"] > TAIL:
            where = f" ({when_words(o, final_step).split(';')[0]})" if o["by"] is not None else ""
            facts.append(("other side", f"{o['share_crossing']:.1%} of resamples also cross {-claim_.sign * levels.strong:+g}{where}"))
    for reason in claim_.reasons:
        facts.append(("why", reason.words()))
        facts.append(("to settle", reason.fix.words()))
    return facts


def _agreement(primary: dict, other: dict, claims: dict[str, Claim]) -> str:
    """How another method's series stands to the primary's: identical, agreeing, or disagreeing and why."""
    if other["series"] == primary["series"]:
        return "identical numbers"
    a, b = claims[primary["key"]], claims[other["key"]]
    said = b.call + (f" ({b.reasons[0].short()})" if b.reasons else "")
    if a.call == b.call and a.sign == b.sign:
        if not a.called:
            return f"agrees: {said}"
        x, y = primary["emergence_interval"], other["emergence_interval"]
        meet = (x["after"] or -1) < y["by"] and (y["after"] or -1) < x["by"]
        return (f"agrees: {said} after {y['after_revision']}, by {y['by_revision']}" if meet else
                f"disagrees on when: after {y['after_revision']}, by {y['by_revision']}, an interval that does not meet the primary's")  # fmt: skip
    return f"disagrees: {said}"


def verdict(summary: dict, task, claims: dict[str, Claim], context: SweepContext = SweepContext()) -> Verdict:
    """The headline's claim as a first line, then its labelled facts, the other methods, the null, the clean run,
    the second line of evidence, the heads, the discovery, and the revisions left out."""
    q = summary["quality"]
    caveats = []
    if q["failed_revisions"]:
        caveats.append(("failed", ", ".join(f["revision"] for f in q["failed_revisions"]) + " (left out)"))
    for d in q["duplicates"]:
        owner = d["measurement_belongs_to"]
        caveats.append(("identical weights", " = ".join(d["members"]) + (f": measured once, as {owner}; the others left out" if owner else
                                                                        ": which step they were saved at is unknown, all left out")))  # fmt: skip
    if summary["usable_checkpoints"] == 0:
        return Verdict("Cannot call: no usable checkpoint (every revision failed or was left out as a duplicate).", tuple(caveats))
    results = [res for res in summary["results"].values() if res["base_contrast"] == task.headline.name]
    primary = next(res for res in results if res["primary"])
    label = describe_contrast(task, primary)
    claim_ = claims[primary["key"]]
    facts = series_facts(primary, claims, summary["final_step"], context)
    for other in results:
        if other is not primary:
            facts.append((f"method {other['method']}", _agreement(primary, other, claims)))
    null = summary["nulls"][SIDES[claim_.sign or 1]]
    if null and not any(r.kind == "null_not_beaten" for r in claim_.reasons):
        facts.append(("null", ("at the final checkpoint, " if null.get("p_value") is not None else "") + null["statement"]))
    clean = summary["clean"]
    if clean and clean["answered"]:
        facts.append(("clean", f"answered: success rate {clean['final']:.2f} at the final checkpoint ({clean['min']:.2f}-{clean['max']:.2f} over the sweep)"))
    for key, name in (("discovery", "discovery"), ("evidence", "evidence"), ("heads", "heads"), ("circuit", "circuit")):
        if summary.get(key):
            facts.append((name, summary[key]["statement"]))
    if (summary.get("heads") or {}).get("sizes"):
        facts.append(("head sizes", summary["heads"]["sizes"]))
    if (summary.get("circuit") or {}).get("roles"):
        facts.append(("circuit roles", summary["circuit"]["roles"]["statement"]))
    answer = _answer(label, primary, claim_, task)
    return Verdict(answer, tuple(facts + caveats))
