"""A tracking server over HTTP: whether it answers, and how long an outage a sweep rides out.

MLflow's client retries every request to a server that does not answer (connection refused, 5xx, 429) with
urllib3's exponential backoff, as MLFLOW_HTTP_REQUEST_MAX_RETRIES and MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR say
(defaults 7 and 2: 244 s). A sweep whose server comes back within that budget loses nothing; one gone for
longer stops with one line (TrackingServerLost) and resumes when rerun.
"""

from __future__ import annotations

import urllib.request

from mlflow.environment_variables import (
    MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
    MLFLOW_HTTP_REQUEST_BACKOFF_JITTER,
    MLFLOW_HTTP_REQUEST_MAX_RETRIES,
)
from urllib3.exceptions import NewConnectionError
from urllib3.util.retry import Retry

from pythia_sweep.errors import PythiaSweepError


class TrackingServerLost(PythiaSweepError):
    """The tracking server stopped answering mid-sweep for longer than MLflow's client retries (`revision`: the
    record being written when it did)."""

    def __init__(self, message: str, uri: str, revision: str | None = None):
        super().__init__(message)
        self.uri, self.revision = uri, revision


def unreachable(uri: str, timeout_s: float = 5) -> str | None:
    """Why the tracking server at `uri` does not answer its health endpoint now (None: it answers)."""
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s)
        return None
    except (OSError, ValueError) as error:
        return str(error)


def retry_budget_s() -> float:
    """Seconds MLflow's client keeps retrying one request to a server that refuses connections: the sum of urllib3's
    backoff over MLFLOW_HTTP_REQUEST_MAX_RETRIES retries at MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR (MLflow's own policy,
    replayed), without the random jitter (up to MLFLOW_HTTP_REQUEST_BACKOFF_JITTER s per retry)."""
    retries = MLFLOW_HTTP_REQUEST_MAX_RETRIES.get()
    retry, waited = Retry(total=retries, connect=retries, backoff_factor=MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get()), 0.0
    for _ in range(retries):
        retry = retry.increment(method="POST", url="/", error=NewConnectionError(None, "connection refused"))
        waited += retry.get_backoff_time()
    return waited


def retry_policy() -> str:
    """MLflow's retry settings as the user would change them, for the message that names the budget."""
    return (f"MLFLOW_HTTP_REQUEST_MAX_RETRIES={MLFLOW_HTTP_REQUEST_MAX_RETRIES.get()}, "
            f"MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR={MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get()}, "
            f"jitter up to {MLFLOW_HTTP_REQUEST_BACKOFF_JITTER.get():g} s a retry")  # fmt: skip
