"""Bisection to the emergence step, on synthetic timelines over Pythia's real 154 revisions."""

import math

from pythia_sweep.hub.revisions import Checkpoint, resolve_schedule
from pythia_sweep.run.refine import bisect_emergence

STEPS = [0] + [2**i for i in range(10)] + list(range(1000, 143001, 1000))
PUBLISHED = [Checkpoint(f"step{s}", s) for s in STEPS]
LOG = [c.revision for c in resolve_schedule("EleutherAI/pythia-160m", "log", PUBLISHED)]


def sweep_of(strength):
    return {r: strength(int(r[4:])) for r in LOG}


def test_bisection_finds_a_step_function_in_log_fetches():
    truth = lambda step: 0.9 if step >= 37000 else 0.0  # noqa: E731
    calls = []

    def measure(revision):
        calls.append(revision)
        return truth(int(revision[4:]))

    bracket = bisect_emergence(PUBLISHED, sweep_of(truth), measure)
    assert (bracket.below, bracket.above) == ("step36000", "step37000")
    assert bracket.gap == 31  # step33000 ... step63000 lie between step32000 and step64000
    assert len(bracket.fetched) == len(calls) <= math.ceil(math.log2(bracket.gap + 1))
    assert bracket.monotonic and not bracket.note


def test_non_monotonic_series_is_reported_not_pretended_away():
    truth = lambda step: 0.9 if 3000 <= step < 20000 or step >= 100000 else 0.1  # noqa: E731
    bracket = bisect_emergence(PUBLISHED, sweep_of(truth), lambda r: truth(int(r[4:])))
    assert not bracket.monotonic
    assert [e["event"] for e in bracket.events] == ["appear", "disappear", "reappear"]
    assert "rises and falls again" in bracket.note and (bracket.below, bracket.above) == ("step2000", "step3000")


def test_nothing_to_bracket_when_never_above():
    bracket = bisect_emergence(PUBLISHED, sweep_of(lambda s: 0.0), lambda r: 0.0)
    assert bracket.above is None and bracket.fetched == [] and "nothing to bracket" in bracket.note
