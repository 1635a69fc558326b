"""Which checkpoints a model has: the revisions it publishes, which of them a schedule asks for, and where training ends.

Pythia publishes 154 revisions per model as git branches of the Hub repo: step0, step1, step2, step4 ...
step512, then step1000 ... step143000 every 1000 steps (step143000 == main). A revision asked for that is not
published (a typo such as step-1; the methodology's step256000, step512000 and step1000000) stops the command
before anything runs (`check_published`), naming the nearest published ones, rather than being quietly replaced
or recorded as a failure. A config that means to ask for them says so (`unpublished = "list"`): they are left
out of the sweep and listed as asked for, not published.

The end of training is one rule, `TrainingEnd`: the last published checkpoint (else the last one measured ok).
The log schedule ends there, a discovery pass reads it, identical weights are measured as it, and every training
fraction divides by its step. Fetching a revision is `fetch.py`'s; what its weights are, `weights.py`'s.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, constants, is_offline_mode, scan_cache_dir
from huggingface_hub.constants import HF_HUB_CACHE
from huggingface_hub.errors import CacheNotFound, CorruptedCacheException, HfHubHTTPError, RepositoryNotFoundError

from pythia_sweep.errors import HubUnreachable, RevisionNotPublished
from pythia_sweep.hub.retry import hub_call, one_line


STEP_BRANCH = re.compile(r"^step(\d+)(?:-tokens\d+[KMBT]?)?$")  # Pythia "step1000"; OLMo "step1000-tokens4B"
SEED_SCHEDULE = (  # the methodology's eleven revisions, literally (three of them do not exist for Pythia)
    "step1000", "step2000", "step4000", "step8000", "step16000", "step32000",
    "step64000", "step128000", "step256000", "step512000", "step1000000",
)  # fmt: skip


@dataclass(frozen=True)
class Checkpoint:
    revision: str  # the branch name, e.g. "step1000"
    step: int | None  # training step parsed from the name; None for names like "main"


def step_of(revision: str) -> int | None:
    match = STEP_BRANCH.match(revision)
    return int(match.group(1)) if match else None


def published_revisions(repo_id: str, cache_dir: str | Path | None = None) -> list[Checkpoint]:
    """Every `step*` branch of the repo, ordered by step: from the Hub, or from the local cache offline."""
    if is_offline_mode():
        names = _cached_refs(repo_id, cache_dir)
        if not names:
            raise HubUnreachable(
                f"model {repo_id!r} has no revisions in the local Hugging Face cache ({cache_dir or HF_HUB_CACHE}) and "
                "HF_HUB_OFFLINE is set; run online once, or point HF_HUB_CACHE at the cache that holds it (the demo "
                "family: `make demo` builds it, then HF_HUB_OFFLINE=1 HF_HUB_CACHE=.cache/hf/hub)"
            )
    else:
        try:
            refs = hub_call(f"list the revisions of {repo_id!r}", lambda: HfApi().list_repo_refs(repo_id))
        except RepositoryNotFoundError as error:
            raise RevisionNotPublished(f"model repo {repo_id!r} does not exist on the Hugging Face Hub") from error
        except HfHubHTTPError as error:  # 401/403 and the like: the Hub is there but will not answer
            raise HubUnreachable(f"the Hugging Face Hub at {constants.ENDPOINT} refused to list the revisions "
                                 f"of {repo_id!r}: {one_line(error)}") from error  # fmt: skip
        names = [b.name for b in refs.branches]
    checkpoints = [Checkpoint(n, step_of(n)) for n in names if step_of(n) is not None]
    return sorted(checkpoints, key=lambda c: c.step)


def _cached_refs(repo_id: str, cache_dir: str | Path | None) -> list[str]:
    try:
        info = scan_cache_dir(cache_dir)
    except (CorruptedCacheException, CacheNotFound):
        return []
    return [ref for repo in info.repos if repo.repo_id == repo_id for rev in repo.revisions for ref in rev.refs]


def describe_range(published: list[Checkpoint]) -> str:
    if not published:
        return "none"
    names = [c.revision for c in published]
    return f"{len(names)} revisions: {', '.join(names[:4])}{' ... ' + names[-1] if len(names) > 4 else ''}"


def nearest_published(revision: str, published: list[Checkpoint]) -> str:
    """The published revisions either side of an unpublished one's step, in words; for a name without a step
    (step-1, stepABC, main), the published names closest to it."""
    step = step_of(revision)
    if step is None and published:
        close = difflib.get_close_matches(revision, [c.revision for c in published], n=3, cutoff=0.5)
        return f"closest published names: {', '.join(close)}" if close else f"published: {describe_range(published)}"
    if step is None or not published:
        return f"published: {describe_range(published)}"
    before = [c.revision for c in published if c.step is not None and c.step < step]
    after = [c.revision for c in published if c.step is not None and c.step > step]
    return f"nearest published: {before[-1] if before else 'none'} before, {after[0] if after else 'none'} after"


def not_published_message(repo_id: str, revision: str, published: list[Checkpoint]) -> str:
    return f"revision {revision!r} does not exist for {repo_id} ({nearest_published(revision, published)}; available: {describe_range(published)})"


def resolve_schedule(repo_id: str, schedule: str | tuple[str, ...], published: list[Checkpoint]) -> list[Checkpoint]:
    """The revisions a schedule asks for, ordered by step. Unpublished names are kept, never replaced:
    `check_published` refuses them or sets them aside."""
    if not published:
        raise RevisionNotPublished(f"model {repo_id} publishes no step* revisions")
    final = final_step(published)
    if schedule == "seed":
        names = list(SEED_SCHEDULE)
    elif schedule == "log":  # the methodology's doubling from step1000, kept to what exists, plus the final step
        by_step = {c.step: c.revision for c in published}
        steps, s = [], 1000
        while s < final:
            if s in by_step:
                steps.append(s)
            s *= 2
        names = [by_step[s] for s in steps] + [by_step[final]]
    elif schedule == "all":
        names = [c.revision for c in published]
    else:
        names = list(schedule)
    checkpoints = [Checkpoint(n, step_of(n)) for n in dict.fromkeys(names)]  # unpublished names kept, in order
    return sorted(checkpoints, key=lambda c: (c.step is None, c.step or 0, c.revision))


def check_published(repo_id: str, schedule: list[Checkpoint], published: list[Checkpoint], unpublished: str = "refuse",
                    ) -> tuple[list[Checkpoint], list[Checkpoint]]:  # fmt: skip
    """The scheduled revisions the model publishes, and those it does not. With `unpublished` = "refuse" (the
    default) a revision not published stops the command before anything runs or is recorded: a typo never joins a
    sweep. With "list" (a config asking for them on purpose, as the methodology's does) they are set aside, to be
    listed as asked for, not published. A schedule of which nothing is published is refused either way."""
    available = {c.revision for c in published}
    kept = [c for c in schedule if c.revision in available]
    missing = [c for c in schedule if c.revision not in available]
    if missing and (unpublished == "refuse" or not kept):
        first = missing[0].revision
        others = f" (and {', '.join(repr(c.revision) for c in missing[1:])})" if missing[1:] else ""
        fix = ('ask for published revisions, or set unpublished = "list" in the config to sweep the others and list these'
               if kept else "ask for published revisions")  # fmt: skip
        raise RevisionNotPublished(f"revision {first!r}{others} is not published by {repo_id} ({nearest_published(first, published)}; "
                                   f"available: {describe_range(published)}): {fix}")  # fmt: skip
    return kept, missing


@dataclass(frozen=True)
class TrainingEnd:
    """The end of training, decided once: the denominator of every training fraction, the revision a discovery pass
    reads, the owner of identical weights, the last revision of the log schedule. None and None when nothing says."""

    revision: str | None
    step: int | None

    @classmethod
    def of(cls, published: Sequence[Checkpoint] | None, measured: Iterable[Checkpoint] = ()) -> TrainingEnd:
        """The last published checkpoint; without the published list, the last one measured ok. Callers pass only
        the checkpoints of ok records: a failed or unpublished revision (step999 asked of a family that ends at
        448) never sets it."""
        candidates = [c for c in (published or measured) if c.step is not None]
        last = max(candidates, key=lambda c: c.step, default=None)
        return cls(last.revision, last.step) if last else cls(None, None)


def final_step(published: Sequence[Checkpoint] | None, measured_steps: Iterable[int | None] = ()) -> int | None:
    """`TrainingEnd`'s step, for a reader that needs the step alone (the log schedule's last; `measured_steps`: the
    steps of ok records, only their steps being read)."""
    return TrainingEnd.of(published, [Checkpoint(f"step{s}", s) for s in measured_steps]).step
