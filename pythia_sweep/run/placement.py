"""Where the sweep's workers run, and what the driver does and says when one is lost.

A worker lost with its node (the machine gone, its processes killed) is reported by Ray at once as unavailable,
while Ray's node table lists the node alive until its heartbeat check gives up, tens of seconds later: a
replacement placed by Ray alone could land on the node that is going and lose the checkpoint a second time. So a
replacement is pinned to a live node with room that has lost no worker in this sweep, where there is one.
"""

from __future__ import annotations

import time

import ray
from ray._private.state import available_resources_per_node  # DeveloperAPI: what is free on each node
from ray.exceptions import RayActorError

MAX_ATTEMPTS = 3  # a checkpoint whose worker dies this many times (beyond Ray's own retries) is recorded failed


def where_it_ran(ready_answer) -> dict:
    """A worker's node (`ready()`'s answer), with whether Ray's node table lists that node alive now; empty for a
    worker lost before it was up."""
    try:
        answer = ray.get(ready_answer, timeout=0)
    except Exception:  # noqa: BLE001 - lost before it answered
        return {}
    alive = {n["NodeID"]: n["Alive"] for n in ray.nodes()}
    return answer | {"node_alive": alive.get(answer["node"], False)}


def ip_of(node: str | None) -> str | None:
    return next((n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node), None)


def node_with_room(resource: str, avoid: set[str], wait_s: float = 5.0) -> str | None:
    """A live node with one `resource` free for a replacement worker, not one in `avoid` (nodes that lost a worker:
    a node that is going still looks alive until Ray's heartbeat check gives up on it, tens of seconds) unless those
    are all the cluster has. None when none has room within `wait_s` (a just-died worker's slot takes a moment)."""
    deadline = time.monotonic() + wait_s
    while True:
        alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        usable = alive - avoid or alive
        free = [node for node, left in available_resources_per_node().items() if node in usable and left.get(resource, 0) >= 1]
        if free or time.monotonic() > deadline:
            return free[0] if free else None
        time.sleep(0.25)


def lost_worker_line(error: RayActorError, where: dict, revision: str, pending: str | None, attempt: int, n_workers: int,
                     replaced: bool, replacement: str | None) -> str:  # fmt: skip
    """The terminal's line for a lost worker: where it ran and what Ray's node table says of that node, what happens
    to the checkpoints it held, and where its replacement goes (or how many workers are left)."""
    if where:
        node = "Ray lists its node dead" if not where["node_alive"] else "Ray still lists its node alive"
        place, why = f"worker on node {where['ip']} lost", f"{type(error).__name__}; {node}"
    else:
        place, why = "a worker lost before it started", type(error).__name__
    held = f"{revision} and {pending}" if pending else revision
    fate = f"{held} back in the queue (attempt {attempt + 1} of {MAX_ATTEMPTS})" if attempt < MAX_ATTEMPTS else f"{revision} recorded as failed"
    if attempt >= MAX_ATTEMPTS and pending:
        fate += f", {pending} back in the queue"
    if replaced:
        then = f"a new worker on {replacement}" if replacement else "a new worker, wherever Ray finds room for it"
    else:
        then = f"no free slot for another: {n_workers} worker{'s' * (n_workers != 1)} left"
    return f"{place} while measuring {revision} ({why}): {fate}; {then}"
