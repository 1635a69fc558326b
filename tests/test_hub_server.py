"""The paths users take online, for real: the unchanged huggingface_hub client against a Hub on 127.0.0.1.

Each test serves tests/conftest.py's tiny fixtures (or a repo it publishes itself) with
`support.hub_server` and runs pythia_sweep online in a child process (hub_fixtures.py says
why). The server counts what it served, so a test can say what was downloaded and how often.
"""

import hashlib
import http.client
import random
from pathlib import Path

import pytest
from conftest import NEOX_REPO, STEPS
from hub_fixtures import hub, run_online  # noqa: F401 - `hub` is a fixture

from pythia_sweep.hub.fetch import fetch
from pythia_sweep.hub.weights import published_weights, weights_of
from pythia_sweep.hub.duplicates import measured_revisions
from pythia_sweep.hub.retry import HUB_ATTEMPTS
from pythia_sweep.errors import CorruptCheckpoint
from pythia_sweep.demo.hub_cache import repo_folder, write_revision
from support.hub_server import HubServer

WEIGHTS = "model.safetensors"
FETCH = f"""
import os
from pythia_sweep.hub.fetch import fetch
f = fetch({NEOX_REPO!r}, "step1000")
result = {{"path": f.path, "sha": f.weight_sha256, "files": sorted(os.listdir(f.path))}}
"""


def served_snapshot(cache, repo_id: str, revision: str) -> Path:
    """The server's own copy of a revision: its snapshot folder in the served cache."""
    root = repo_folder(cache, repo_id)
    return root / "snapshots" / (root / "refs" / revision).read_text()


def statuses(hub: HubServer, method: str, path_end: str) -> list[int]:
    return [r.status for r in hub.requests if r.method == method and r.path.split("?")[0].endswith(path_end)]


def test_revisions_are_listed_from_the_server(hub, tmp_path):
    code = f"""
from pythia_sweep.hub.revisions import published_revisions
result = [c.revision for c in published_revisions({NEOX_REPO!r})]
"""
    out = run_online(hub, tmp_path / "client", code)
    assert out["result"] == [f"step{s}" for s in STEPS]  # what conftest published, ordered by step
    assert [r.path for r in hub.requests] == [f"/api/models/{NEOX_REPO}/refs"]


def test_fetch_downloads_a_revision_over_http_into_an_empty_cache(hub, hub_cache, tmp_path):
    served = served_snapshot(hub_cache, NEOX_REPO, "step1000")
    weights = (served / WEIGHTS).read_bytes()
    out = run_online(hub, tmp_path / "client", FETCH)["result"]
    assert out["sha"] == {WEIGHTS: hashlib.sha256(weights).hexdigest()}
    assert Path(out["path"]).is_relative_to(tmp_path / "client")
    assert (Path(out["path"]) / WEIGHTS).read_bytes() == weights
    assert out["files"] == sorted(p.name for p in served.iterdir())  # config, generation config, tokenizer, weights
    assert statuses(hub, "GET", WEIGHTS) == [200]
    assert hub.weight_bytes_served() == len(weights)  # the weights crossed HTTP once


def test_metadata_digest_equals_the_digest_of_the_downloaded_weights(hub, tmp_path):
    code = f"""
from pythia_sweep.hub.fetch import fetch
from pythia_sweep.hub.weights import published_weights
before = published_weights({NEOX_REPO!r}, "step2")
fetched = fetch({NEOX_REPO!r}, "step2")
result = [(w.weights_digest, w.weight_sha256, w.commit) for w in (before, fetched)]
"""
    from_metadata, from_download = run_online(hub, tmp_path / "client", code)["result"]
    assert from_metadata == from_download


def test_truncated_download_is_downloaded_again_by_the_client(hub, hub_cache, tmp_path):
    weights = (served_snapshot(hub_cache, NEOX_REPO, "step1000") / WEIGHTS).read_bytes()
    hub.corrupt_next(NEOX_REPO, WEIGHTS, mode="truncate")  # the connection drops half way through the body
    out = run_online(hub, tmp_path / "client", FETCH)["result"]
    assert out["sha"] == {WEIGHTS: hashlib.sha256(weights).hexdigest()}
    # huggingface_hub resumes from what it wrote, in 10 MiB chunks: for a small file, that is from byte 0
    assert statuses(hub, "GET", WEIGHTS) == [200, 200]


@pytest.mark.slow
def test_large_truncated_download_is_resumed_with_a_range_request(tmp_path):
    chunk = 10 * 2**20  # huggingface_hub 2.4 writes (and so resumes) in 10 MiB chunks
    weights = random.Random(1).randbytes(2 * chunk + 12345)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / WEIGHTS).write_bytes(weights)
    write_revision(tmp_path / "served", "tiny-test/large", "step1", tmp_path / "src")
    with HubServer(tmp_path / "served") as server:
        server.corrupt_next("tiny-test/large", WEIGHTS, mode="truncate")  # cut after half the body
        code = "from pythia_sweep.hub.fetch import fetch\nresult = fetch('tiny-test/large', 'step1').weight_sha256"
        assert run_online(server, tmp_path / "client", code)["result"] == {WEIGHTS: hashlib.sha256(weights).hexdigest()}
        gets = [(r.status, r.range) for r in server.requests if r.method == "GET" and "/resolve/" in r.path]
        assert gets == [(200, None), (206, f"bytes={chunk}-")]  # resumed after the one whole chunk it had
        assert server.bytes_served == {f"tiny-test/large/{WEIGHTS}": len(weights) // 2 + len(weights) - chunk}


def test_corrupt_download_is_fetched_again_once(hub, hub_cache, tmp_path):
    weights = (served_snapshot(hub_cache, NEOX_REPO, "step1000") / WEIGHTS).read_bytes()
    hub.corrupt_next(NEOX_REPO, WEIGHTS, times=1, mode="alter")  # right length, wrong bytes: only the hash tells
    out = run_online(hub, tmp_path / "client", FETCH)["result"]
    assert out["sha"] == {WEIGHTS: hashlib.sha256(weights).hexdigest()}
    assert (Path(out["path"]) / WEIGHTS).read_bytes() == weights
    assert statuses(hub, "GET", WEIGHTS) == [200, 200]
    assert statuses(hub, "GET", "/config.json") == [200]  # only the corrupt file was downloaded again


def test_download_still_corrupt_after_one_refetch_is_refused_naming_revision_and_file(hub, tmp_path):
    hub.corrupt_next(NEOX_REPO, WEIGHTS, times=2, mode="alter")
    out = run_online(hub, tmp_path / "client", FETCH)
    assert out["error_type"] == "CorruptCheckpoint"
    assert f"weight file {WEIGHTS} of revision 'step1000' ({NEOX_REPO}) is corrupt" in out["error"]
    assert "downloaded twice" in out["error"]
    assert statuses(hub, "GET", WEIGHTS) == [200, 200]  # one re-fetch, no third


def test_hub_down_at_start_is_one_clear_line_and_works_again_once_back(hub, tmp_path):
    code = f"""
from pythia_sweep.hub.fetch import fetch
from pythia_sweep.hub.revisions import published_revisions
result = {{}}
calls = {{"list": lambda: published_revisions({NEOX_REPO!r}), "fetch": lambda: fetch({NEOX_REPO!r}, "step1")}}
for name, call in calls.items():
    try:
        call()
        result[name] = "ok"
    except Exception as error:
        result[name] = [type(error).__name__, str(error)]
"""
    url = hub.url
    hub.stop()
    out = run_online(hub, tmp_path / "client", code)["result"]
    for name in ("list", "fetch"):
        kind, message = out[name]
        assert kind == "HubUnreachable", message
        assert "\n" not in message and message.startswith(f"cannot reach the Hugging Face Hub at {url} to ")
        assert "ConnectError" in message and "make demo" in message
    hub.start()  # back, on the same port
    assert hub.url == url
    assert run_online(hub, tmp_path / "client", code)["result"] == {"list": "ok", "fetch": "ok"}


def test_stopping_the_server_cuts_open_connections_and_restart_reuses_the_port(hub):
    client = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=10)  # one kept-alive connection
    client.request("GET", f"/api/models/{NEOX_REPO}/refs")
    assert client.getresponse().read() and client.sock is not None
    port = hub.port
    hub.stop()
    with pytest.raises((ConnectionError, http.client.HTTPException)):  # a dead server, not a lingering handler
        client.request("GET", f"/api/models/{NEOX_REPO}/refs")
        client.getresponse().read()
    client.close()
    hub.start()
    assert hub.port == port
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    client.request("HEAD", f"/{NEOX_REPO}/resolve/step1000/{WEIGHTS}")
    response = client.getresponse()
    client.close()
    assert response.status == 200 and len(response.getheader("X-Linked-Etag").strip('"')) == 64


@pytest.mark.slow
def test_429_and_503_are_answered_with_backoff_then_succeed(hub, hub_cache, tmp_path):
    weights = (served_snapshot(hub_cache, NEOX_REPO, "step1000") / WEIGHTS).read_bytes()
    # each where huggingface_hub 2.4 does not retry by itself: refs, repo info, a file's GET (503)
    hub.fail_next(2, status=503, retry_after=1, path_contains="/refs")
    hub.fail_next(1, status=429, retry_after=0, path_contains="/revision/")
    hub.fail_next(1, status=503, retry_after=None, path_contains=WEIGHTS, method="GET")
    code = f"from pythia_sweep.hub.revisions import published_revisions\npublished_revisions({NEOX_REPO!r})\n" + FETCH
    out = run_online(hub, tmp_path / "client", code)
    assert out["result"]["sha"] == {WEIGHTS: hashlib.sha256(weights).hexdigest()}, out
    assert statuses(hub, "GET", "/refs") == [503, 503, 200]
    assert statuses(hub, "GET", WEIGHTS) == [503, 200]
    assert statuses(hub, "GET", "/config.json") == [200]  # the retry downloaded nothing twice
    assert out["wall_s"] >= 2 + 1  # Retry-After: 1 s twice, then a 1 s backoff for the 503 without one


def test_a_hub_that_keeps_answering_503_is_refused_after_bounded_retries(hub, tmp_path):
    hub.fail_next(100, status=503, retry_after=0)
    code = f"""
from pythia_sweep.hub.fetch import fetch
from pythia_sweep.hub.revisions import published_revisions
result = []
for call in (lambda: published_revisions({NEOX_REPO!r}), lambda: fetch({NEOX_REPO!r}, "step1")):
    try:
        call()
        result.append("ok")
    except Exception as error:
        result.append([type(error).__name__, str(error)])
"""
    out = run_online(hub, tmp_path / "client", code)["result"]
    whats = [f"list the revisions of {NEOX_REPO!r}", f"fetch revision 'step1' of {NEOX_REPO}"]
    for (kind, message), what in zip(out, whats, strict=True):
        assert kind == "HubUnreachable" and "\n" not in message
        assert f"answered HTTP 503 to {what}, {HUB_ATTEMPTS} tries in a row" in message
    assert len(statuses(hub, "GET", "/refs")) == HUB_ATTEMPTS
    assert len(hub.requests) == 2 * HUB_ATTEMPTS  # bounded: refs 5 times, then the revision's info 5 times
    assert hub.bytes_served == {}


@pytest.mark.slow
def test_no_room_for_the_dry_runs_sizes_is_refused_before_any_byte(hub, tmp_path):
    run_online(hub, tmp_path / "measure", FETCH)
    written = sum(p.stat().st_size for p in (repo_folder(tmp_path / "measure", NEOX_REPO) / "blobs").iterdir())
    hub.requests.clear()
    hub.bytes_served.clear()
    with_free_space = """
import collections, shutil
Usage = collections.namedtuple("Usage", "total used free")
shutil.disk_usage = lambda path: Usage(10**12, 10**12 - {free}, {free})
"""
    margin = 1.05  # check_free_space asks for 5% more than the dry run's total
    out = run_online(hub, tmp_path / "client", with_free_space.format(free=int(written * margin) - 1) + FETCH)
    assert out["error_type"] == "DiskFull" and f"in {tmp_path / 'client'}, but only" in out["error"]
    assert not [r for r in hub.requests if r.method == "GET" and "/resolve/" in r.path]  # not one byte of a file
    out = run_online(hub, tmp_path / "client", with_free_space.format(free=int(written * margin) + 1) + FETCH)
    assert "result" in out, out
    assert sum(hub.bytes_served.values()) == written


def test_duplicates_are_found_from_the_hubs_metadata_without_downloading(hub, tmp_path):
    code = f"""
from pythia_sweep.hub.weights import weights_of
from pythia_sweep.hub.duplicates import measured_revisions
result = [measured_revisions(weights_of("tiny-test/neox-dup", ["step4", "step2"])),
          measured_revisions(weights_of({NEOX_REPO!r}, {[f"step{s}" for s in STEPS]!r}))]
"""
    dup, distinct = run_online(hub, tmp_path / "client", code)["result"]
    assert dup == {"step4": "step2", "step2": "step2"}  # conftest republished step2's weights as step4
    assert distinct == {f"step{s}": f"step{s}" for s in STEPS}  # random weights per step: all distinct
    assert not [r for r in hub.requests if "/resolve/" in r.path]  # not even a file's HEAD
    assert hub.bytes_served == {}
    assert measured_revisions(weights_of("tiny-test/neox-dup", ["step2", "step4"])) == {"step2": "step2", "step4": "step2"}  # offline


def test_revisions_are_duplicates_only_when_every_weight_file_is_identical(tmp_path):
    """Pythia-like: step0 == step1, main == the final step, and a revision sharing one shard of two is distinct."""
    rng = random.Random(0)
    shards = {name: rng.randbytes(3000 + 100 * i) for i, name in enumerate("ABCDE")}
    layout = {"step0": "AB", "step1": "AB", "step2": "AC", "step4": "DE", "step1000": "AC", "main": "AC"}
    root = tmp_path / "served"
    for revision, (first, second) in layout.items():
        folder = tmp_path / "src" / revision
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(f'{{"revision": "{revision}"}}')  # configs differ: only weights count
        (folder / "model-00001-of-00002.safetensors").write_bytes(shards[first])
        (folder / "model-00002-of-00002.safetensors").write_bytes(shards[second])
        write_revision(root, "tiny-test/shards", revision, folder)
    expected = {"step0": "step0", "step1": "step0", "step2": "step2", "step4": "step4", "step1000": "step2",
                "main": "step2"}  # fmt: skip
    asked = ["main", "step1000", "step4", "step2", "step1", "step0", "step8"]  # step8 is not published: left out
    with HubServer(root) as server:
        code = f"from pythia_sweep.hub.weights import weights_of\nfrom pythia_sweep.hub.duplicates import measured_revisions\nresult = measured_revisions(weights_of('tiny-test/shards', {asked}))"
        assert run_online(server, tmp_path / "client", code)["result"] == expected
        assert server.bytes_served == {} and not [r for r in server.requests if "/resolve/" in r.path]
        assert len(server.requests) == len(asked)  # one metadata request per revision
    assert measured_revisions(weights_of("tiny-test/shards", asked, cache_dir=root)) == expected  # offline
    step2 = published_weights("tiny-test/shards", "step2", cache_dir=root).weight_sha256
    assert step2 == {"model-00001-of-00002.safetensors": hashlib.sha256(shards["A"]).hexdigest(),
                     "model-00002-of-00002.safetensors": hashlib.sha256(shards["C"]).hexdigest()}  # fmt: skip


def test_a_revision_fetched_online_is_used_offline_from_the_cache(tmp_path):
    """Pythia publishes safetensors and .bin: online, only safetensors are fetched, and the cache then holds a
    listing naming both; offline, fetch and the duplicate check still answer from the cache alone."""
    weights = random.Random(2).randbytes(5000)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text("{}")
    (tmp_path / "src" / WEIGHTS).write_bytes(weights)
    (tmp_path / "src" / "pytorch_model.bin").write_bytes(weights[::-1])
    for revision in ("step1", "step2"):
        write_revision(tmp_path / "served", "tiny-test/both", revision, tmp_path / "src")
    client = tmp_path / "client"
    with HubServer(tmp_path / "served") as server:
        code = """
from pythia_sweep.hub.fetch import fetch
result = [fetch("tiny-test/both", revision).weights_digest for revision in ("step1", "step2")]
"""
        online = run_online(server, client, code)["result"]
        assert not [r for r in server.requests if r.path.endswith("pytorch_model.bin")]
    offline = [fetch("tiny-test/both", r, cache_dir=client) for r in ("step1", "step2")]  # this process is offline
    assert [f.weights_digest for f in offline] == online
    assert offline[0].weight_sha256 == {WEIGHTS: hashlib.sha256(weights).hexdigest()}
    duplicates = measured_revisions(weights_of("tiny-test/both", ["step2", "step1"], cache_dir=client))
    assert duplicates == {"step2": "step1", "step1": "step1"}


def test_offline_a_corrupt_cached_file_is_refused_at_once(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / WEIGHTS).write_bytes(random.Random(3).randbytes(5000))
    write_revision(tmp_path / "cache", "tiny-test/rotten", "step7", tmp_path / "src")
    blob = next((repo_folder(tmp_path / "cache", "tiny-test/rotten") / "blobs").iterdir())
    blob.write_bytes(blob.read_bytes()[:1000])  # a truncated file, under the name of the published sha256
    message = rf"weight file {WEIGHTS} of revision 'step7' \(tiny-test/rotten\) is corrupt: sha256 .* does not match"
    with pytest.raises(CorruptCheckpoint, match=message):
        fetch("tiny-test/rotten", "step7", cache_dir=tmp_path / "cache")  # this process is offline: no re-fetch
