"""Write model revisions into a local Hugging Face cache, in the Hub's own layout.

No machine here reaches the Hub, so the demo family, the benchmark checkpoints and the test fixtures are
written the way `huggingface_hub` itself writes a download:

    <cache>/models--ORG--NAME/blobs/<etag>              file contents (LFS files: etag = sha256)
    <cache>/models--ORG--NAME/snapshots/<commit>/<file>  -> ../../blobs/<etag>
    <cache>/models--ORG--NAME/refs/<branch>              the branch's commit hash

With HF_HUB_OFFLINE=1 and HF_HUB_CACHE pointing here, the real `snapshot_download`, `from_pretrained`
and `scan_cache_dir` read these revisions unchanged, exactly as they would read a real download.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

LFS_SUFFIXES = (".safetensors", ".bin")  # the Hub stores these in LFS; their etag is the sha256


def repo_folder(cache_dir: str | Path, repo_id: str) -> Path:
    return Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))


def _etag(name: str, data: bytes) -> str:
    if name.endswith(LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id, as the Hub reports


def write_revision(cache_dir: str | Path, repo_id: str, revision: str, folder: str | Path) -> str:
    """Publish every file of `folder` as branch `revision` of `repo_id`; returns the commit hash.

    Identical files in two revisions share one blob, as on the Hub; the commit hash depends on the
    branch name too, so two branches with identical weights still have distinct commits (as Pythia's do).
    """
    root = repo_folder(cache_dir, repo_id)
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    etags = {}
    for path in files:
        data = path.read_bytes()
        etag = _etag(path.name, data)
        blob = root / "blobs" / etag
        if not blob.exists():
            blob.parent.mkdir(parents=True, exist_ok=True)
            tmp = blob.with_suffix(".incomplete")
            tmp.write_bytes(data)
            tmp.replace(blob)
        etags[path.relative_to(folder).as_posix()] = etag
    listing = "".join(f"{name} {etag}\n" for name, etag in sorted(etags.items()))
    commit = hashlib.sha1(f"{revision}\n{listing}".encode()).hexdigest()
    snapshot = root / "snapshots" / commit
    for name, etag in etags.items():
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(root / "blobs" / etag, link.parent))
    ref = root / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)
    return commit


def save_revision(model, tokenizer, cache_dir: str | Path, repo_id: str, revision: str, workdir: str | Path) -> str:
    """Save a transformers model and tokenizer (safetensors) and publish them as one revision."""
    folder = Path(workdir) / revision
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return write_revision(cache_dir, repo_id, revision, folder)
