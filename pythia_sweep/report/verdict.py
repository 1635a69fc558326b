"""The verdict in words: one first line that is the answer (at most 200 characters: the call, when, how sure), then
labelled lines, one fact each (when, stage, the crossing, the final value, the shape, the other side, each reason
with its fix, the other methods, the null, the clean run, the evidence, the heads, the revisions left out), the same
on the terminal, the page, MLflow and summary.json. What is claimed, and why, is decided in report/claim.py; this
module only says it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pythia_sweep import analysis
from pythia_sweep.analysis import SIDES, TAIL, Levels
from pythia_sweep.report.claim import Claim, SweepContext

BAND_WORDS = {"early": "the first 25%", "mid": "the middle 50%", "late": "the last 25%"}
FIRST_LINE_MAX = 200  # characters: the answer, read at a glance


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
        return f"identical numbers to {primary['method']}'s at every analysed checkpoint"
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
