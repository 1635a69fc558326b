"""A Hugging Face Hub on 127.0.0.1, serving a local folder in the Hub's cache layout, with faults on demand.

The real `huggingface_hub` client (2.4) runs against it unchanged with `HF_ENDPOINT=http://127.0.0.1:PORT`
and `HF_HUB_OFFLINE=0`. The folder is what `pythia_sweep.demo.hub_cache` (or a real download) writes:

    <root>/models--ORG--NAME/refs/<branch>               the branch's commit hash
    <root>/models--ORG--NAME/snapshots/<commit>/<file>   -> ../../blobs/<etag>
    <root>/models--ORG--NAME/blobs/<etag>                 LFS files: etag = sha256 (64 hex); others: git blob sha1

What the client asks for, read from huggingface_hub 2.4's source, and what is served:

    GET  /api/models/{repo}/refs                     list_repo_refs: branches (+ empty tags, converts, PRs)
    GET  /api/models/{repo}[/revision/{rev}]         model_info/repo_info: `sha`, `siblings`; with `blobs=true`
                                                     each sibling has size, blobId and lfs {sha256, size, pointerSize}
    GET  /api/models/{repo}/tree/{rev}[/{path}]      list_repo_tree (snapshot_download lists files with it):
                                                     type, path, size, oid, lfs {oid, size, pointerSize}
    HEAD /{repo}/resolve/{rev}/{file}                file metadata: X-Repo-Commit, ETag (sha256 for LFS files, the
                                                     git blob sha1 otherwise), X-Linked-Etag and X-Linked-Size for
                                                     LFS files, Content-Length, Accept-Ranges
    GET  /{repo}/resolve/{rev}/{file}                the bytes; `Range: bytes=a-[b]` answers 206 (the client
                                                     resumes a broken download that way)

Missing things answer 404 with the `X-Error-Code` the client maps to its errors (RepoNotFound,
RevisionNotFound, EntryNotFound). No `X-Xet-Hash` header and no `xetHash` in listings are ever sent, so the
client never takes its Xet path (which would talk to a separate CAS service) and downloads over plain HTTP.
Files are served directly (no redirect to a CDN host), so there is no `Location` header.

Faults, for tests: `fail_next(n, status, retry_after, path_contains, method)` answers the next n matching
requests with 429/5xx and a `Retry-After`; `corrupt_next(repo, file, times, mode)` serves a file's body
altered (same length, so only a hash check catches it) or truncated (the connection drops mid-body);
`stop()` closes the listening socket and every open connection (a server that died), `start()` binds the
same port again (it came back).

Why not an existing server (checked November 2026, by reading the wheels' source):
- hf-local-hub 3.0.0: the wheel is a 6 kB typer CLI and client; `hf-local serve` runs a separate Go binary
  (`find_binary()` looks for `hf-local` and otherwise says "Build with 'make server'") that the wheel does not
  ship, so nothing installs from the package index that could serve a repository.
- olah 0.5.4 serves local repositories only as git repositories (GitPython, LFS objects under
  `.git/lfs/objects`), not the Hub cache layout that the demo family and the fixtures are written in. Its
  local-mirror routes do serve branch refs and a HEAD whose ETag is the LFS sha256, but the GET ignores
  `Range` (it streams the whole file, read into memory), the HEAD has no X-Linked-Size/X-Linked-Etag, and
  `model_info` siblings carry only `rfilename` (no size or LFS sha256 even with `blobs=true`), which the
  duplicate detection reads. It has no fault injection, and it would add ~20 dependencies (fastapi, uvicorn,
  pydantic-settings, peewee, GitPython, brotli, ...). So this is the smallest server that serves the cache
  layout as-is: the standard library's ThreadingHTTPServer.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from pythia_sweep.hub.weights import blob_sha256

LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"
COMMIT = re.compile(r"^[0-9a-f]{40}$")
API_ROUTE = re.compile(r"^/api/models/(?P<repo>[^/]+(?:/[^/]+)??)(?:/(?P<op>refs|revision|tree)(?:/(?P<rest>.*))?)?$")
RESOLVE_ROUTE = re.compile(r"^/(?P<repo>[^/]+(?:/[^/]+)?)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
CHUNK = 1 << 20


@dataclass(frozen=True)
class RepoFile:
    path: str  # path inside the repo, "/"-separated
    blob: Path  # the cached content
    size: int  # bytes of content
    lfs_sha256: str | None  # LFS files: sha256 of the content (the blob's name); None for regular git files
    git_oid: str  # git blob id: of the LFS pointer for LFS files (as the Hub reports), of the content otherwise

    @property
    def etag(self) -> str:  # what the Hub sends as (linked) ETag, and the client names the blob by
        return self.lfs_sha256 or self.git_oid

    def lfs_pointer_size(self) -> int:
        return len(LFS_POINTER.format(sha256=self.lfs_sha256, size=self.size))


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # as sent, query string included
    status: int
    range: str | None  # the Range header, when there was one


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class CacheRepos:
    """Reads model repos, revisions and files from a folder in the Hub's cache layout."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def folder(self, repo_id: str) -> Path | None:
        folder = self.root / ("models--" + repo_id.replace("/", "--"))
        return folder if (folder / "snapshots").is_dir() else None

    def branches(self, repo_id: str) -> dict[str, str]:
        """Branch name -> commit, from refs/ (nested names kept, PR refs left out)."""
        refs = self.folder(repo_id) / "refs"
        found = {p.relative_to(refs).as_posix(): p.read_text().strip() for p in refs.rglob("*") if p.is_file()}
        return {name: commit for name, commit in sorted(found.items()) if not name.startswith("refs/")}

    def commit(self, repo_id: str, revision: str) -> str | None:
        if ".." in revision.split("/") or revision.startswith("/"):  # names a file outside refs/
            return None
        folder = self.folder(repo_id)
        ref = folder / "refs" / revision
        if ref.is_file():
            return ref.read_text().strip()
        if COMMIT.match(revision) and (folder / "snapshots" / revision).is_dir():
            return revision
        return None

    def files(self, repo_id: str, commit: str) -> dict[str, RepoFile]:
        snapshot = self.folder(repo_id) / "snapshots" / commit
        files = {}
        for link in sorted(snapshot.rglob("*")):
            if not link.is_file():
                continue
            blob = link.resolve()
            size = blob.stat().st_size
            lfs = blob_sha256(blob)  # an LFS blob in the cache is named by its content's sha256 (the package's one rule)
            if lfs:
                oid = _git_blob_id(LFS_POINTER.format(sha256=lfs, size=size).encode())
            else:
                oid = blob.name if COMMIT.match(blob.name) else _git_blob_id(blob.read_bytes())
            path = link.relative_to(snapshot).as_posix()
            files[path] = RepoFile(path, blob, size, lfs, oid)
        return files


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address, hub: HubServer):
        self.hub = hub
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request, client_address):
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        with self.connections_lock:
            open_now = list(self.connections)
        for sock in open_now:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class HubServer:
    """A Hub on 127.0.0.1 serving `root` (Hub cache layout). Use as a context manager, or start()/stop().

    `port=0` picks a free port on the first start; later starts reuse it, so a restarted server is found
    at the same `url`.
    """

    def __init__(self, root: str | Path, port: int = 0, host: str = "127.0.0.1"):
        if host != "127.0.0.1":
            raise ValueError(f"host={host!r} is not allowed: the test Hub binds 127.0.0.1 only")
        self.repos = CacheRepos(root)
        self.host, self.port = host, port
        self.requests: list[Request] = []  # every request answered, in order
        self.bytes_served: dict[str, int] = {}  # "repo/file" -> body bytes sent by GET /resolve
        self._lock = threading.Lock()
        self._failures: list[tuple[int, int | None, str, str | None]] = []  # (status, retry_after, path part, method)
        self._corruptions: dict[tuple[str, str], list[str]] = {}  # (repo, file) -> modes still to serve
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> HubServer:
        if self._server is not None:
            return self
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                                        name=f"hub-server-{self.port}")  # fmt: skip
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection, as a server that died would."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.drop_connections()
        server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- faults ---------------------------------------------------------------------------------------------
    def fail_next(self, count: int, status: int = 503, retry_after: int | None = 0, path_contains: str = "",
                  method: str | None = None) -> None:  # fmt: skip
        """Answer the next `count` requests whose path contains `path_contains` (and whose method is `method`,
        when given) with `status` and `Retry-After: retry_after` (no header when None)."""
        if status not in (408, 429, 500, 502, 503, 504):
            raise ValueError(f"status={status} is not a transient HTTP status (408, 429, 500, 502, 503, 504)")
        with self._lock:
            self._failures += [(status, retry_after, path_contains, method)] * count

    def corrupt_next(self, repo_id: str, filename: str, times: int = 1, mode: str = "alter") -> None:
        """Serve the next `times` GETs of the file corrupt: `alter` flips 16 bytes mid-file (same length),
        `truncate` sends the full Content-Length but only half the body, then drops the connection."""
        if mode not in ("alter", "truncate"):
            raise ValueError(f"mode={mode!r} is not valid: one of 'alter', 'truncate'")
        with self._lock:
            self._corruptions.setdefault((repo_id, filename), []).extend([mode] * times)

    def clear_faults(self) -> None:
        with self._lock:
            self._failures.clear()
            self._corruptions.clear()

    def weight_bytes_served(self) -> int:
        """Body bytes sent for .safetensors and .bin files."""
        with self._lock:
            return sum(n for name, n in self.bytes_served.items() if name.endswith((".safetensors", ".bin")))

    def _take_failure(self, method: str, path: str) -> tuple[int, int | None] | None:
        with self._lock:
            for i, (status, retry_after, contains, only) in enumerate(self._failures):
                if contains in path and only in (None, method):
                    del self._failures[i]
                    return status, retry_after
        return None

    def _take_corruption(self, repo_id: str, filename: str) -> str | None:
        with self._lock:
            modes = self._corruptions.get((repo_id, filename))
            return modes.pop(0) if modes else None

    def _record(self, request: Request, served: tuple[str, int] | None = None) -> None:
        with self._lock:
            self.requests.append(request)
            if served:
                self.bytes_served[served[0]] = self.bytes_served.get(served[0], 0) + served[1]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real Hub: a dying server cuts pooled connections
    server: _Server

    def log_message(self, format, *args):  # noqa: A002 - quiet: tests read HubServer.requests instead
        pass

    def do_HEAD(self):
        self._answer(body=False)

    def do_GET(self):
        self._answer(body=True)

    # -- dispatch -------------------------------------------------------------------------------------------
    def _answer(self, body: bool) -> None:
        hub = self.server.hub
        url = urlsplit(self.path)
        failure = hub._take_failure(self.command, url.path)
        if failure is not None:
            status, retry_after = failure
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            self._json(status, {"error": f"injected HTTP {status}"}, body, headers)
            return
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if api := API_ROUTE.match(url.path):
            self._api(unquote(api["repo"]), api["op"], api["rest"], query, body)
        elif resolve := RESOLVE_ROUTE.match(url.path):
            self._resolve(unquote(resolve["repo"]), unquote(resolve["rev"]), unquote(resolve["file"]), body)
        else:
            self._json(404, {"error": f"no such route: {url.path}"}, body)

    def _api(self, repo_id: str, op: str | None, rest: str | None, query: dict, body: bool) -> None:
        repos = self.server.hub.repos
        if repos.folder(repo_id) is None:
            return self._not_found("RepoNotFound", f"Repository {repo_id} not found", body)
        if op == "refs":
            branches = [{"name": name, "ref": f"refs/heads/{name}", "targetCommit": commit}
                        for name, commit in repos.branches(repo_id).items()]  # fmt: skip
            return self._json(200, {"branches": branches, "tags": [], "converts": [], "pullRequests": []}, body)
        revision, path = "main", ""
        if rest:
            revision, _, path = rest.partition("/") if op == "tree" else (rest, "", "")
            revision, path = unquote(revision), unquote(path).strip("/")
        commit = repos.commit(repo_id, revision)
        if commit is None:
            return self._not_found("RevisionNotFound", f"Invalid rev id: {revision}", body)
        files = repos.files(repo_id, commit)
        if op == "tree":
            return self._tree(files, path, _is_true(query.get("recursive")), commit, body)
        with_blobs = _is_true(query.get("blobs"))
        siblings = [_sibling(f, with_blobs) for f in files.values()]
        info = {"_id": commit[:24], "id": repo_id, "modelId": repo_id, "author": repo_id.split("/")[0], "sha": commit,
                "private": False, "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": [],
                "library_name": "transformers", "siblings": siblings}  # fmt: skip
        self._json(200, info, body)

    def _tree(self, files: dict[str, RepoFile], path: str, recursive: bool, commit: str, body: bool) -> None:
        prefix = f"{path}/" if path else ""
        below = {p: f for p, f in files.items() if p.startswith(prefix)}
        if path and not below:
            return self._not_found("EntryNotFound", f"{path} does not exist", body, commit)
        entries, folders = [], set()
        for p, f in below.items():
            parts = p[len(prefix):].split("/")
            for depth in range(1, len(parts)):  # the folders on the way, once each
                folder = prefix + "/".join(parts[:depth])
                if (recursive or depth == 1) and folder not in folders:
                    folders.add(folder)
                    oid = hashlib.sha1(f"tree {folder}".encode()).hexdigest()
                    entries.append({"type": "directory", "oid": oid, "size": 0, "path": folder})
            if recursive or len(parts) == 1:
                entry = {"type": "file", "oid": f.git_oid, "size": f.size, "path": p}
                if f.lfs_sha256:
                    entry["lfs"] = {"oid": f.lfs_sha256, "size": f.size, "pointerSize": f.lfs_pointer_size()}
                entries.append(entry)
        self._json(200, entries, body)

    def _resolve(self, repo_id: str, revision: str, filename: str, body: bool) -> None:
        hub = self.server.hub
        repos = hub.repos
        if repos.folder(repo_id) is None:
            return self._not_found("RepoNotFound", f"Repository {repo_id} not found", body)
        commit = repos.commit(repo_id, revision)
        if commit is None:
            return self._not_found("RevisionNotFound", f"Invalid rev id: {revision}", body)
        file = repos.files(repo_id, commit).get(filename)
        if file is None:
            return self._not_found("EntryNotFound", f"{filename} does not exist at {revision}", body, commit)
        start, end = 0, file.size - 1
        status = 200
        wanted = self.headers.get("Range")
        if wanted:
            span = _byte_range(wanted, file.size)
            if span is None:
                return self._send(416, {"Content-Range": f"bytes */{file.size}", "Content-Length": "0"}, b"", body)
            (start, end), status = span, 206
        headers = {
            "X-Repo-Commit": commit,
            "ETag": f'"{file.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Length": str(end - start + 1),
        }
        if file.lfs_sha256:
            headers |= {"X-Linked-Etag": f'"{file.lfs_sha256}"', "X-Linked-Size": str(file.size)}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{file.size}"
        mode = hub._take_corruption(repo_id, filename) if body else None
        self._start(status, headers)
        sent = self._stream(file, start, end, mode) if body else 0
        hub._record(Request(self.command, self.path, status, wanted), (f"{repo_id}/{filename}", sent) if body else None)

    # -- responses ------------------------------------------------------------------------------------------
    def _stream(self, file: RepoFile, start: int, end: int, mode: str | None) -> int:
        """Send bytes start..end of the file; returns how many went out."""
        stop = end + 1 if mode != "truncate" else start + (end + 1 - start) // 2
        flip = range(file.size // 2, file.size // 2 + 16) if mode == "alter" else range(0)
        sent = 0
        try:
            with open(file.blob, "rb") as f:
                f.seek(start)
                at = start
                while at < stop:
                    chunk = bytearray(f.read(min(CHUNK, stop - at)))
                    if not chunk:
                        break
                    for i in flip:
                        if at <= i < at + len(chunk):
                            chunk[i - at] ^= 0xFF
                    self.wfile.write(chunk)
                    at += len(chunk)
                    sent += len(chunk)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        if mode == "truncate":  # the body ends early: drop the connection so the client sees it cut
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return sent

    def _start(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _send(self, status: int, headers: dict[str, str], payload: bytes, body: bool) -> None:
        try:
            self._start(status, headers)
            if body:
                self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        self.server.hub._record(Request(self.command, self.path, status, self.headers.get("Range")))

    def _json(self, status: int, payload, body: bool, extra: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json", "Content-Length": str(len(data)), **(extra or {})}
        self._send(status, headers, data, body)

    def _not_found(self, code: str, message: str, body: bool, commit: str | None = None) -> None:
        extra = {"X-Error-Code": code, "X-Error-Message": message}
        if commit:
            extra["X-Repo-Commit"] = commit
        self._json(404, {"error": message}, body, extra)


def _sibling(file: RepoFile, with_blobs: bool) -> dict:
    if not with_blobs:
        return {"rfilename": file.path}
    sibling = {"rfilename": file.path, "size": file.size, "blobId": file.git_oid}
    if file.lfs_sha256:
        sibling["lfs"] = {"sha256": file.lfs_sha256, "size": file.size, "pointerSize": file.lfs_pointer_size()}
    return sibling


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """`bytes=a-b`, `bytes=a-` or `bytes=-n` (one range) -> inclusive (start, end); None if unsatisfiable."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    return (start, end) if start <= end and start < size else None


def _is_true(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true")
