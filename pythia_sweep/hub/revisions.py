"""Where checkpoints come from: which revisions a model publishes, which a schedule asks for, and fetching them.

Pythia publishes 154 revisions per model as git branches of the Hub repo: step0, step1, step2, step4 ...
step512, then step1000 ... step143000 every 1000 steps (step143000 == main). A revision asked for that is not
published (a typo such as step-1; the methodology's step256000, step512000 and step1000000) stops the command
before anything runs (`check_published`), naming the nearest published ones, rather than being quietly replaced
or recorded as a failure. A config that means to ask for them says so (`unpublished = "list"`): they are left
out of the sweep and listed as asked for, not published.

Many branches serve identical weights (pythia-2.8b: 76 of 154 equal `main`; step0 == step1 everywhere).
`duplicates.measured_revisions` (by the one rule, `duplicates.identical_weights`) compares the weight files' LFS sha256 from the Hub's metadata before anything is
downloaded, so each distinct set of weights is fetched once; `fetch` checks every downloaded file against
the same hash. Online, every Hub operation goes through `hub.hub_call`: answers meaning "try again later"
(HTTP 408, 429, 5xx) are retried with backoff a bounded number of times, and a Hub that cannot be reached
at all is one `HubUnreachable` line at once.
"""

from __future__ import annotations

import difflib
import errno
import hashlib
import re
import shutil
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from huggingface_hub import DryRunFileInfo, HfApi, constants, hf_hub_download, is_offline_mode, scan_cache_dir, snapshot_download
from huggingface_hub.constants import HF_HUB_CACHE
from huggingface_hub.errors import (
    CacheNotFound,
    CorruptedCacheException,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import are_progress_bars_disabled

from pythia_sweep.errors import CorruptCheckpoint, DiskFull, HubUnreachable, RevisionNotPublished
from pythia_sweep.hub.retry import hub_call, is_connection_failure, one_line


STEP_BRANCH = re.compile(r"^step(\d+)(?:-tokens\d+[KMBT]?)?$")  # Pythia "step1000"; OLMo "step1000-tokens4B"
SEED_SCHEDULE = (  # the methodology's eleven revisions, literally (three of them do not exist for Pythia)
    "step1000", "step2000", "step4000", "step8000", "step16000", "step32000",
    "step64000", "step128000", "step256000", "step512000", "step1000000",
)  # fmt: skip
CONFIG_FILES = ["config.json", "generation_config.json"]
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt"]
SAFETENSORS_FILES = ["*.safetensors", "*.safetensors.index.json"]
BIN_FILES = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]


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
    final = published[-1].step
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


def fetch_metadata(repo_id: str, revision: str, cache_dir: str | Path | None = None) -> str:
    """A revision's config and tokenizer files alone (kilobytes, no weights): enough to check a task and its
    head groups against the model before anything heavy starts. Returns the snapshot folder."""

    def download() -> str:
        try:
            return snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=CONFIG_FILES + TOKENIZER_FILES)
        except RevisionNotFoundError as error:
            raise RevisionNotPublished(f"revision {revision!r} does not exist for {repo_id}") from error

    if is_offline_mode():
        return download()
    return hub_call(f"fetch the config and tokenizer of revision {revision!r} of {repo_id}", download)


@dataclass(frozen=True)
class FetchedCheckpoint:
    revision: str
    path: str  # the snapshot folder: config, tokenizer and weights
    commit: str  # the git commit the branch pointed to
    weight_sha256: dict[str, str]  # file name -> sha256 of its content
    weights_digest: str  # one hash over all weight files: equal digests mean identical weights


def fetch(repo_id: str, revision: str, cache_dir: str | Path | None = None,
          progress: Callable[[str], Any] | None = None) -> FetchedCheckpoint:  # fmt: skip
    """Download (or find in the cache) one revision: config, tokenizer, and safetensors or else .bin weights.

    Online, the dry run's file sizes are checked against the free disk space before any byte is downloaded
    (`DiskFull`). Every weight file is then hashed: one whose sha256 differs from the Hub's LFS hash (the
    blob's name in the cache) is downloaded once more, alone; still different, it is refused with
    `CorruptCheckpoint` naming the revision and the file. Offline, the cache is used as it is.

    `progress` shows each weight file's download, in bytes, where huggingface_hub shows nothing: it draws its
    own bars only when stderr is a terminal, and a Ray worker's is a log file. `progress("<revision> <file>")`
    returns the `tqdm_class` that file's download is drawn with (as huggingface_hub calls it). Given, the
    weight files not cached yet are downloaded first, one after another, each on its own bar. Not used when
    huggingface_hub's bars are switched off (HF_HUB_DISABLE_PROGRESS_BARS=1).
    """
    what = f"fetch revision {revision!r} of {repo_id}"
    offline = is_offline_mode()
    if progress is not None and are_progress_bars_disabled():
        progress = None
    if offline:
        folder = _download(repo_id, revision, cache_dir)
    else:
        folder = hub_call(what, lambda: _download(repo_id, revision, cache_dir, progress))
    names = _weight_files(p.name for p in folder.iterdir() if p.is_file())
    if not names:
        raise CorruptCheckpoint(f"revision {revision!r} of {repo_id} has no weight files (*.safetensors or *.bin)")
    hashes = {name: file_sha256(folder / name) for name in names}
    corrupt = [name for name in names if not _matches_blob_name(folder / name, hashes[name])]
    if corrupt and not offline:
        for name in corrupt:  # one more download of each corrupt file, alone, from the same commit; then give up
            bar = progress(f"{revision} {name}") if progress else None
            hub_call(what, lambda name=name, bar=bar: hf_hub_download(repo_id, name, revision=folder.name, cache_dir=cache_dir,
                                                                       force_download=True, tqdm_class=bar))  # fmt: skip
            hashes[name] = file_sha256(folder / name)
        corrupt = [name for name in corrupt if not _matches_blob_name(folder / name, hashes[name])]
    if corrupt:
        path = folder / corrupt[0]
        raise CorruptCheckpoint(
            f"weight file {path.name} of revision {revision!r} ({repo_id}) is corrupt: sha256 "
            f"{hashes[path.name][:12]}... does not match the published {path.resolve().name[:12]}..."
            f"{'' if offline else ', downloaded twice'}; delete {path.resolve()} and fetch again"
        )
    return FetchedCheckpoint(revision, str(folder), folder.name, hashes, _digest(hashes))


def _weight_files(names: Iterable[str]) -> list[str]:
    """The weight files among a revision's top-level file names: safetensors when there are any, else .bin."""
    top = [n for n in names if "/" not in n and n.endswith((".safetensors", ".bin"))]
    for patterns in (SAFETENSORS_FILES, BIN_FILES):
        found = sorted(n for n in top if any(fnmatch(n, p) for p in patterns))
        if found:
            return found
    return []


def _digest(weight_sha256: dict[str, str]) -> str:
    """One hash over a revision's weight files (name and sha256 of each): equal digests, identical weights."""
    return hashlib.sha256("".join(f"{n}:{h}\n" for n, h in sorted(weight_sha256.items())).encode()).hexdigest()


def _matches_blob_name(path: Path, sha256: str) -> bool:
    """An LFS file is cached as a blob named by the sha256 the Hub published; other names cannot be checked."""
    blob_name = path.resolve().name
    return not re.fullmatch(r"[0-9a-f]{64}", blob_name) or blob_name == sha256


def _download(repo_id: str, revision: str, cache_dir: str | Path | None, progress: Callable[[str], Any] | None = None) -> Path:
    if is_offline_mode():
        return _cached_snapshot(repo_id, revision, cache_dir, CONFIG_FILES + TOKENIZER_FILES)
    weight_patterns, listing = _weight_patterns(repo_id, revision, cache_dir)
    needed = sum(f.file_size or 0 for f in listing if f.will_download)
    target = Path(cache_dir or HF_HUB_CACHE)
    check_free_space(needed, target, f"revision {revision!r} of {repo_id}")
    try:
        if progress is not None:  # the weights first, each on its own bar; snapshot_download then finds them cached
            weights = set(_weight_files(f.filename for f in listing))
            for f in listing:
                if f.will_download and f.filename in weights:
                    hf_hub_download(repo_id, f.filename, revision=f.commit_hash, cache_dir=cache_dir,
                                    tqdm_class=progress(f"{revision} {f.filename}"))  # fmt: skip
        patterns = CONFIG_FILES + TOKENIZER_FILES + weight_patterns
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=patterns))
    except RevisionNotFoundError as error:
        raise RevisionNotPublished(f"revision {revision!r} does not exist for {repo_id}") from error
    except RepositoryNotFoundError as error:
        raise RevisionNotPublished(f"model repo {repo_id!r} does not exist on the Hugging Face Hub") from error
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise DiskFull(f"the disk holding {target} filled while fetching revision {revision!r} of {repo_id} "
                           f"({needed / 1e9:.2f} GB needed); free space or set HF_HUB_CACHE elsewhere") from error  # fmt: skip
        raise


def _cached_snapshot(repo_id: str, revision: str, cache_dir: str | Path | None, others: list[str]) -> Path:
    """Offline: the cached snapshot, with safetensors weights when it has them, else .bin.

    Asked one kind at a time: `snapshot_download` refuses a snapshot that lacks a file its cached listing
    names, and a revision fetched online holds only one kind of the two that Pythia publishes.
    """
    for weights in (SAFETENSORS_FILES, BIN_FILES):
        patterns = others + weights
        folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=patterns))
        if _weight_files(p.name for p in folder.iterdir() if p.is_file()):
            break
    return folder


def _weight_patterns(repo_id: str, revision: str, cache_dir: str | Path | None) -> tuple[list[str], list[DryRunFileInfo]]:
    """Safetensors when the revision has them, else .bin, and the Hub's dry run of the download: each file
    with its commit, size (from HEAD requests) and whether it will be downloaded (not cached yet).

    When the Hub cannot be connected to, nothing can be downloaded: the cache answers (or `snapshot_download`
    says it cannot), so the listing is empty. A "try again later" answer propagates to `hub.hub_call`, which retries.
    """
    try:
        for weights in (SAFETENSORS_FILES, BIN_FILES):
            listing = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, dry_run=True,
                                        allow_patterns=CONFIG_FILES + TOKENIZER_FILES + weights)  # fmt: skip
            if _weight_files(f.filename for f in listing):
                return weights, listing
    except RevisionNotFoundError as error:
        raise RevisionNotPublished(f"revision {revision!r} does not exist for {repo_id}") from error
    except RepositoryNotFoundError as error:
        raise RevisionNotPublished(f"model repo {repo_id!r} does not exist on the Hugging Face Hub") from error
    except Exception as error:  # DryRunError wraps what stopped it
        if not is_connection_failure(error):  # a transient answer is retried by hub_call; anything else is not ours
            raise
    return SAFETENSORS_FILES + BIN_FILES, []


@dataclass(frozen=True)
class PublishedWeights:
    """A revision's weight files as the Hub describes them, known without downloading them."""

    revision: str
    commit: str  # the git commit the branch points to
    weight_sha256: dict[str, str]  # file name -> sha256 (the LFS hash; "git:<blob id>" for a file not in LFS)
    weights_digest: str  # as FetchedCheckpoint.weights_digest: equal digests mean identical weights
    size: int  # bytes of all weight files


def published_weights(repo_id: str, revision: str, cache_dir: str | Path | None = None) -> PublishedWeights:
    """The weight files' sha256 of one revision, from metadata only: nothing is downloaded.

    Online: one `model_info(files_metadata=True)` call, whose siblings carry each LFS file's sha256 and
    size. Offline: the local cache, where an LFS file's blob is named by its sha256. A revision the Hub does
    not publish, or (offline) the cache does not hold, raises `RevisionNotPublished`.
    """
    if is_offline_mode():
        return _cached_weights(repo_id, revision, cache_dir)

    def ask() -> PublishedWeights:
        try:
            info = HfApi().model_info(repo_id, revision=revision, files_metadata=True)
        except RevisionNotFoundError as error:
            raise RevisionNotPublished(f"revision {revision!r} does not exist for {repo_id}") from error
        except RepositoryNotFoundError as error:
            raise RevisionNotPublished(f"model repo {repo_id!r} does not exist on the Hugging Face Hub") from error
        siblings = {s.rfilename: s for s in info.siblings or []}
        names = _weight_files(siblings)
        hashes = {n: siblings[n].lfs.sha256 if siblings[n].lfs else f"git:{siblings[n].blob_id}" for n in names}
        size = sum(siblings[n].size or 0 for n in names)
        return PublishedWeights(revision, info.sha, hashes, _digest(hashes), size)

    return hub_call(f"read the file list of revision {revision!r} of {repo_id}", ask)


def _cached_weights(repo_id: str, revision: str, cache_dir: str | Path | None) -> PublishedWeights:
    try:
        folder = _cached_snapshot(repo_id, revision, cache_dir, [])
    except LocalEntryNotFoundError as error:
        raise RevisionNotPublished(f"revision {revision!r} of {repo_id} is not in the local Hugging Face cache "
                                   f"({cache_dir or HF_HUB_CACHE}) and HF_HUB_OFFLINE is set") from error  # fmt: skip
    names = _weight_files(p.name for p in folder.iterdir() if p.is_file())
    hashes = {}
    for name in names:
        blob = (folder / name).resolve()
        hashes[name] = blob.name if re.fullmatch(r"[0-9a-f]{64}", blob.name) else file_sha256(blob)
    size = sum((folder / n).stat().st_size for n in names)
    return PublishedWeights(revision, folder.name, hashes, _digest(hashes), size)


def final_step(published: Sequence[Checkpoint] | None, measured_steps: Iterable[int | None] = ()) -> int | None:
    """The end of training, the denominator of every training fraction: the last published step; without the
    published list, the last step measured ok. Callers pass only the steps of ok records: a failed or
    unpublished revision (step999 asked of a family that ends at 448) never sets it."""
    if published:
        return max(c.step for c in published if c.step is not None)
    steps = [s for s in measured_steps if s is not None]
    return max(steps) if steps else None


def final_revision(published: Sequence[Checkpoint]) -> str:
    """The model's last checkpoint, the end of training (`final_step`'s revision): what a discovery pass reads and
    which of identical weights is measured."""
    return max(published, key=lambda c: -1 if c.step is None else c.step).revision


def weights_of(repo_id: str, revisions: Iterable[str], cache_dir: str | Path | None = None) -> dict[str, PublishedWeights]:
    """The published weights of each revision, from metadata only (8 requests in flight); revisions that are
    not published (or, offline, not cached) are left out."""
    names = list(dict.fromkeys(revisions))

    def lookup(revision: str) -> PublishedWeights | None:
        try:
            return published_weights(repo_id, revision, cache_dir)
        except RevisionNotPublished:
            return None

    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="hub-metadata") as pool:
        return {w.revision: w for w in pool.map(lookup, names) if w is not None}


def check_free_space(needed: int, folder: Path, what: str, margin: float = 1.05) -> None:
    """Refuse a download that cannot fit, saying how much space it needs and where."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed * margin > free:
        raise DiskFull(
            f"fetching {what} needs {needed / 1e9:.2f} GB in {folder}, but only {free / 1e9:.2f} GB is free; "
            "free space or point HF_HUB_CACHE at a larger disk"
        )


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
