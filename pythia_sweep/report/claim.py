"""What the numbers support: the claim a series earns, by one rule, with its reasons as data.

The rule for a call (`Claim.of`), on one contrast's series over the analysed checkpoints:
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

Reasons are data (kind, numbers, fix), words made from them alone; the verdict's lines are report/verdict.py's.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import polars as pl

from pythia_sweep import analysis
from pythia_sweep.analysis import SIDES, TAIL
from pythia_sweep.measure.scoring import NULL_LEVEL, null_test
from pythia_sweep.stats import NullStats

CLEAN_ANSWERED = 0.5  # the clean prompt counts as answered when its success rate is at least this


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
class SweepContext:
    """What a fix names, from the sweep around the series: the command that refines this sweep, the earliest
    published revision, the task's null pool and whether a wider one exists."""

    refine: str = "python -m jobs.refine --sweep <sweep>"
    earliest_published: str | None = None
    null_pool: str = "group-layers"


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

    @classmethod
    def of(cls, res: dict, clean: dict | None, nulls: dict[int, dict] | None, context: SweepContext = SweepContext()) -> Claim:
        """The call a series earns (the module docstring's rule). `res["sides"]` holds each side's crossing interval;
        `nulls` the null test for each side's group, by side name (None: no null is read)."""
        if res["final_value"] is None:
            return cls("cannot call", None, (Reason("no_numbers", {}, Fix("checkpoints", "rerun the sweep: it resumes the failed revisions")),))
        blockers = []
        if clean is not None and not clean["answered"]:
            blockers.append(Reason("clean_not_answered", {k: clean[k] for k in ("final", "min", "max", "level")},
                                   Fix("nothing", "the task's clean prompts, answers or success rule, or a model that answers them")))  # fmt: skip
        crossings = {sign: res["sides"][SIDES[sign]]["interval"] for sign in SIDES}
        if crossings[1] is None:
            blockers.append(Reason("no_interval", {"why": "fewer than two prompts, or a side of the contrast not decoded"},
                                   Fix("prompts", "at least two prompts, with both sides of the contrast decoded")))  # fmt: skip
            return cls("cannot call", next((s for s in SIDES if res["sides"][SIDES[s]]["point"]), None), tuple(blockers))
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
            return cls("cannot call" if reasons else "no emergence", measured, tuple(reasons))
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
        return cls(("emerges" if sign == 1 else "reversed") if not reasons else "cannot call", sign, tuple(reasons))


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
