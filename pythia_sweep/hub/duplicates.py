"""Which revisions are one checkpoint: the duplicate rule, in one place, that every reader calls.

Public Pythia branches serve byte-identical weights under several names (EleutherAI/pythia #83, #198, #205,
#206). The sweep asks the Hub's metadata for each revision's weight hashes (weights.weights_of) before
downloading anything and measures each distinct set once (`measured_revisions`); the report reads the same
rule back from the records (`identical_weights`), so a legacy sweep's numbers move to the owner too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pythia_sweep.hub.revisions import step_of
from pythia_sweep.hub.weights import PublishedWeights


@dataclass(frozen=True)
class IdenticalWeights:
    """Revisions serving byte-identical weight files: one checkpoint published under several names."""

    members: tuple[str, ...]  # ordered by training step
    owner: str | None  # the revision the one measurement belongs to; None: unknown, so every member is excluded

    @property
    def measured(self) -> str:
        """The member to measure: the owner, else the earliest (its numbers are kept, not analysed)."""
        return self.owner or self.members[0]


def _by_step(revision: str) -> tuple[bool, int, str]:
    return step_of(revision) is None, step_of(revision) or 0, revision


def identical_weights(digests: Mapping[str, str | None], final_revision: str | None = None) -> list[IdenticalWeights]:
    """The duplicate rule, the one every reader calls (the sweep before download, the report after).

    Revisions whose weight digests are equal are one checkpoint, measured once. The measurement belongs to the
    final revision when it is in the set (pythia-2.8b serves `main`'s weights under 76 branch names, #205:
    placing them at step66000 would fake an early emergence), else to step0 when it is (step0 = step1 or
    step2 in every Pythia model, #83, #198), else to none: which step those weights were saved at is unknown,
    and every member is left out of the analysis. Revisions without a digest are never duplicates."""
    by_digest: dict[str, list[str]] = {}
    for revision, digest in digests.items():
        if digest:
            by_digest.setdefault(digest, []).append(revision)
    groups = []
    for members in by_digest.values():
        if len(members) > 1:
            members = sorted(members, key=_by_step)
            owner = final_revision if final_revision in members else next((r for r in members if step_of(r) == 0), None)
            groups.append(IdenticalWeights(tuple(members), owner))
    return sorted(groups, key=lambda g: _by_step(g.members[0]))


def measured_revisions(weights: Mapping[str, PublishedWeights], final_revision: str | None = None) -> dict[str, str]:
    """For each revision of `weights` (weights_of: the Hub's metadata, or the cache offline, before any download),
    the revision whose measurement it shares: itself, or its twin's owner by `identical_weights`'s rule."""
    twins = identical_weights({r: w.weights_digest for r, w in weights.items()}, final_revision)
    owner = {r: g.measured for g in twins for r in g.members}
    return {r: owner.get(r, r) for r in weights}
