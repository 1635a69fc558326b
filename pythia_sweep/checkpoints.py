"""Where checkpoints come from: which revisions a model publishes, which a schedule asks for, and fetching them.

Pythia publishes 154 revisions per model as git branches of the Hub repo: step0, step1, step2, step4 ...
step512, then step1000 ... step143000 every 1000 steps (step143000 == main). The methodology we were
handed lists step256000, step512000 and step1000000, which do not exist: a schedule keeps such names and
reports them as unpublished (with the published range) rather than quietly replacing them.
"""

from __future__ import annotations

import errno
import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import httpx2
from huggingface_hub import HfApi, is_offline_mode, scan_cache_dir, snapshot_download
from huggingface_hub.constants import HF_HUB_CACHE
from huggingface_hub.errors import (
    CorruptedCacheException,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from pythia_sweep.errors import CorruptCheckpoint, DiskFull, HubUnreachable, RevisionNotPublished

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
                f"model {repo_id!r} has no revisions in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                "run online once, or `make demo` for the offline demo family"
            )
    else:
        try:
            names = [b.name for b in HfApi().list_repo_refs(repo_id).branches]
        except RepositoryNotFoundError as error:
            raise RevisionNotPublished(f"model repo {repo_id!r} does not exist on the Hugging Face Hub") from error
        except (httpx2.TransportError, OSError, OfflineModeIsEnabled) as error:  # DNS, refused, timeout
            raise HubUnreachable(
                f"cannot reach the Hugging Face Hub to list the revisions of {repo_id!r} "
                f"({type(error).__name__}: {error}). Without Hub access run `make demo` (offline demo family), "
                "or set HF_HUB_OFFLINE=1 to sweep what the local cache holds"
            ) from error
    checkpoints = [Checkpoint(n, step_of(n)) for n in names if step_of(n) is not None]
    return sorted(checkpoints, key=lambda c: c.step)


def _cached_refs(repo_id: str, cache_dir: str | Path | None) -> list[str]:
    try:
        info = scan_cache_dir(cache_dir)
    except CorruptedCacheException:
        return []
    return [ref for repo in info.repos if repo.repo_id == repo_id for rev in repo.revisions for ref in rev.refs]


def describe_range(published: list[Checkpoint]) -> str:
    if not published:
        return "none"
    names = [c.revision for c in published]
    return f"{len(names)} revisions: {', '.join(names[:4])}{' ... ' + names[-1] if len(names) > 4 else ''}"


def not_published_message(repo_id: str, revision: str, published: list[Checkpoint]) -> str:
    return f"revision {revision!r} does not exist for {repo_id} (available: {describe_range(published)})"


def resolve_schedule(repo_id: str, schedule: str | tuple[str, ...], published: list[Checkpoint]) -> list[Checkpoint]:
    """The revisions a schedule asks for, ordered by step. Unpublished names are kept: the sweep records
    them as failed checkpoints with `not_published_message`, so nothing is silently replaced."""
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


def fetch_metadata(repo_id: str, revision: str, cache_dir: str | Path | None = None) -> str:
    """A revision's config and tokenizer files alone (kilobytes, no weights): enough to check a task and its
    head groups against the model before anything heavy starts. Returns the snapshot folder."""
    try:
        return snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=CONFIG_FILES + TOKENIZER_FILES)
    except RevisionNotFoundError as error:
        raise RevisionNotPublished(f"revision {revision!r} does not exist for {repo_id}") from error
    except (httpx2.TransportError, OSError) as error:
        raise HubUnreachable(f"cannot fetch the config of {repo_id}@{revision} ({type(error).__name__}: {error})") from error


@dataclass(frozen=True)
class FetchedCheckpoint:
    revision: str
    path: str  # the snapshot folder: config, tokenizer and weights
    commit: str  # the git commit the branch pointed to
    weight_sha256: dict[str, str]  # file name -> sha256 of its content
    weights_digest: str  # one hash over all weight files: equal digests mean identical weights


def fetch(repo_id: str, revision: str, cache_dir: str | Path | None = None) -> FetchedCheckpoint:
    """Download (or find in the cache) one revision: config, tokenizer, and safetensors or else .bin weights.

    Weight files are hashed here; a file whose sha256 differs from the Hub's LFS hash (the blob's name in
    the cache) is a corrupt download and raises `CorruptCheckpoint` naming the revision and the file.
    """
    try:
        return _fetch_and_hash(repo_id, revision, cache_dir, force=False)
    except CorruptCheckpoint:
        if is_offline_mode():
            raise
        return _fetch_and_hash(repo_id, revision, cache_dir, force=True)  # one re-fetch, then give up


def _fetch_and_hash(repo_id: str, revision: str, cache_dir: str | Path | None, force: bool) -> FetchedCheckpoint:
    weight_patterns, needed = _weight_patterns(repo_id, revision, cache_dir)
    patterns = CONFIG_FILES + TOKENIZER_FILES + weight_patterns
    target = Path(cache_dir or HF_HUB_CACHE)
    check_free_space(needed, target, f"revision {revision!r} of {repo_id}")
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=patterns, force_download=force))
    except RevisionNotFoundError as error:
        raise RevisionNotPublished(f"revision {revision!r} does not exist for {repo_id}") from error
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise DiskFull(f"the disk holding {target} filled while fetching revision {revision!r} of {repo_id} "
                           f"({needed / 1e9:.2f} GB needed); free space or set HF_HUB_CACHE elsewhere") from error  # fmt: skip
        raise
    weights = sorted(p for p in folder.iterdir() if p.name.endswith((".safetensors", ".bin")))
    safetensors = [p for p in weights if p.name.endswith(".safetensors")]
    weights = safetensors or weights
    if not weights:
        raise CorruptCheckpoint(f"revision {revision!r} of {repo_id} has no weight files (*.safetensors or *.bin)")
    hashes = {}
    for path in weights:
        digest = file_sha256(path)
        blob_name = path.resolve().name
        if re.fullmatch(r"[0-9a-f]{64}", blob_name) and blob_name != digest:
            raise CorruptCheckpoint(
                f"weight file {path.name} of revision {revision!r} ({repo_id}) is corrupt: sha256 {digest[:12]}... "
                f"does not match the published {blob_name[:12]}...; delete {path.resolve()} and fetch again"
            )
        hashes[path.name] = digest
    combined = hashlib.sha256("".join(f"{n}:{h}\n" for n, h in sorted(hashes.items())).encode()).hexdigest()
    return FetchedCheckpoint(revision, str(folder), folder.name, hashes, combined)


def _weight_patterns(repo_id: str, revision: str, cache_dir: str | Path | None) -> tuple[list[str], int]:
    """Safetensors when the revision has them, else .bin, and the bytes still to download: asked of the
    Hub without downloading (dry run). Offline, the cache holds what it holds and nothing is downloaded."""
    if is_offline_mode():
        return SAFETENSORS_FILES + BIN_FILES, 0
    try:
        for patterns in (SAFETENSORS_FILES, BIN_FILES):
            listing = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=patterns, dry_run=True)
            if listing:
                return patterns, sum(f.file_size or 0 for f in listing if f.will_download)
    except RevisionNotFoundError as error:
        raise RevisionNotPublished(f"revision {revision!r} does not exist for {repo_id}") from error
    except Exception:  # noqa: BLE001 - listing is an optimisation; the real download reports real errors
        pass
    return SAFETENSORS_FILES + BIN_FILES, 0


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


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
