"""What a revision's weights are, known without downloading them: which files hold them, their sha256, one digest.

Many branches serve identical weights (pythia-2.8b: 76 of 154 equal `main`; step0 == step1 everywhere).
`published_weights` reads each weight file's LFS sha256 from the Hub's metadata (offline: from the cache, where an
LFS blob is named by its sha256), so `duplicates.measured_revisions` can tell identical revisions apart before
anything is downloaded, and `fetch` checks every downloaded file against the same hash. `weights_digest` is one
hash over a revision's weight files: equal digests mean identical weights.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from huggingface_hub import HfApi, is_offline_mode, snapshot_download
from huggingface_hub.constants import HF_HUB_CACHE
from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

from pythia_sweep.errors import RevisionNotPublished
from pythia_sweep.hub.retry import hub_call

SAFETENSORS_FILES = ["*.safetensors", "*.safetensors.index.json"]
BIN_FILES = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]
LFS_BLOB_NAME = re.compile(r"[0-9a-f]{64}")  # an LFS file's blob in the cache is named by the sha256 the Hub published


@dataclass(frozen=True)
class PublishedWeights:
    """A revision's weight files as the Hub describes them, known without downloading them."""

    revision: str
    commit: str  # the git commit the branch points to
    weight_sha256: dict[str, str]  # file name -> sha256 (the LFS hash; "git:<blob id>" for a file not in LFS)
    weights_digest: str  # as FetchedCheckpoint.weights_digest: equal digests mean identical weights
    size: int  # bytes of all weight files


def weight_files(names: Iterable[str]) -> list[str]:
    """The weight files among a revision's top-level file names: safetensors when there are any, else .bin."""
    top = [n for n in names if "/" not in n and n.endswith((".safetensors", ".bin"))]
    for patterns in (SAFETENSORS_FILES, BIN_FILES):
        found = sorted(n for n in top if any(fnmatch(n, p) for p in patterns))
        if found:
            return found
    return []


def weights_digest(weight_sha256: dict[str, str]) -> str:
    """One hash over a revision's weight files (name and sha256 of each): equal digests, identical weights."""
    return hashlib.sha256("".join(f"{n}:{h}\n" for n, h in sorted(weight_sha256.items())).encode()).hexdigest()


def blob_sha256(path: Path) -> str | None:
    """The sha256 a cached file's blob name states (an LFS file is cached as a blob named by the sha256 the Hub
    published), or None where the name is not one (a file not in LFS): then its content must be hashed."""
    name = path.resolve().name
    return name if LFS_BLOB_NAME.fullmatch(name) else None


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def cached_snapshot(repo_id: str, revision: str, cache_dir: str | Path | None, others: list[str]) -> Path:
    """Offline: the cached snapshot, with safetensors weights when it has them, else .bin.

    Asked one kind at a time: `snapshot_download` refuses a snapshot that lacks a file its cached listing
    names, and a revision fetched online holds only one kind of the two that Pythia publishes.
    """
    for weights in (SAFETENSORS_FILES, BIN_FILES):
        patterns = others + weights
        folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=patterns))
        if weight_files(p.name for p in folder.iterdir() if p.is_file()):
            break
    return folder


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
        names = weight_files(siblings)
        hashes = {n: siblings[n].lfs.sha256 if siblings[n].lfs else f"git:{siblings[n].blob_id}" for n in names}
        size = sum(siblings[n].size or 0 for n in names)
        return PublishedWeights(revision, info.sha, hashes, weights_digest(hashes), size)

    return hub_call(f"read the file list of revision {revision!r} of {repo_id}", ask)


def _cached_weights(repo_id: str, revision: str, cache_dir: str | Path | None) -> PublishedWeights:
    try:
        folder = cached_snapshot(repo_id, revision, cache_dir, [])
    except LocalEntryNotFoundError as error:
        raise RevisionNotPublished(f"revision {revision!r} of {repo_id} is not in the local Hugging Face cache "
                                   f"({cache_dir or HF_HUB_CACHE}) and HF_HUB_OFFLINE is set") from error  # fmt: skip
    names = weight_files(p.name for p in folder.iterdir() if p.is_file())
    hashes = {name: blob_sha256(folder / name) or file_sha256((folder / name).resolve()) for name in names}
    size = sum((folder / n).stat().st_size for n in names)
    return PublishedWeights(revision, folder.name, hashes, weights_digest(hashes), size)


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
