"""Fetching a revision: its config and tokenizer alone (the pre-flight), or whole, with every weight file checked.

A download is checked against the free disk space before any byte of it is written (`check_free_space`), and
each weight file against the sha256 the Hub published for it (`weights.blob_sha256`): a corrupt file is fetched
once more, then refused. Online, every Hub operation goes through `retry.hub_call`: answers meaning "try again
later" (HTTP 408, 429, 5xx) are retried with backoff a bounded number of times, and a Hub that cannot be reached
at all is one `HubUnreachable` line at once. Offline, the local cache is used as it is.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import DryRunFileInfo, hf_hub_download, is_offline_mode, snapshot_download
from huggingface_hub.constants import HF_HUB_CACHE
from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.utils import are_progress_bars_disabled

from pythia_sweep.errors import CorruptCheckpoint, DiskFull, RevisionNotPublished
from pythia_sweep.hub.retry import hub_call, is_connection_failure
from pythia_sweep.hub.weights import BIN_FILES, SAFETENSORS_FILES, blob_sha256, cached_snapshot, file_sha256, weight_files, weights_digest

CONFIG_FILES = ["config.json", "generation_config.json"]
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt"]


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
    names = weight_files(p.name for p in folder.iterdir() if p.is_file())
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
    return FetchedCheckpoint(revision, str(folder), folder.name, hashes, weights_digest(hashes))


def _matches_blob_name(path: Path, sha256: str) -> bool:
    """A file whose blob name states a sha256 must have that content; other names cannot be checked."""
    published = blob_sha256(path)
    return published is None or published == sha256


def _download(repo_id: str, revision: str, cache_dir: str | Path | None, progress: Callable[[str], Any] | None = None) -> Path:
    if is_offline_mode():
        return cached_snapshot(repo_id, revision, cache_dir, CONFIG_FILES + TOKENIZER_FILES)
    weight_patterns, listing = _weight_patterns(repo_id, revision, cache_dir)
    needed = sum(f.file_size or 0 for f in listing if f.will_download)
    target = Path(cache_dir or HF_HUB_CACHE)
    check_free_space(needed, target, f"revision {revision!r} of {repo_id}")
    try:
        if progress is not None:  # the weights first, each on its own bar; snapshot_download then finds them cached
            weights = set(weight_files(f.filename for f in listing))
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


def _weight_patterns(repo_id: str, revision: str, cache_dir: str | Path | None) -> tuple[list[str], list[DryRunFileInfo]]:
    """Safetensors when the revision has them, else .bin, and the Hub's dry run of the download: each file
    with its commit, size (from HEAD requests) and whether it will be downloaded (not cached yet).

    When the Hub cannot be connected to, nothing can be downloaded: the cache answers (or `snapshot_download`
    says it cannot), so the listing is empty. A "try again later" answer propagates to `retry.hub_call`, which retries.
    """
    try:
        for weights in (SAFETENSORS_FILES, BIN_FILES):
            listing = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, dry_run=True,
                                        allow_patterns=CONFIG_FILES + TOKENIZER_FILES + weights)  # fmt: skip
            if weight_files(f.filename for f in listing):
                return weights, listing
    except RevisionNotFoundError as error:
        raise RevisionNotPublished(f"revision {revision!r} does not exist for {repo_id}") from error
    except RepositoryNotFoundError as error:
        raise RevisionNotPublished(f"model repo {repo_id!r} does not exist on the Hugging Face Hub") from error
    except Exception as error:  # DryRunError wraps what stopped it
        if not is_connection_failure(error):  # a transient answer is retried by hub_call; anything else is not ours
            raise
    return SAFETENSORS_FILES + BIN_FILES, []


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
