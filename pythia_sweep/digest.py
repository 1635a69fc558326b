"""The content hash that names what a user wrote: a task file's digest and a sweep's id.

Both hash the same way, the sha256 of the data as canonical JSON (keys sorted), its first 12 hex digits: equal
content gives an equal name whatever the key order, and any edited value gives another. The sweep_ids recorded
in existing stores were made this way; changing it would orphan them.
"""

from __future__ import annotations

import hashlib
import json


def content_digest(data: object) -> str:
    """12 hex digits of the sha256 of `data` as JSON with sorted keys."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]
