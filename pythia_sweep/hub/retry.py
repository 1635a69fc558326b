"""Talking to the Hugging Face Hub: every operation goes through `hub_call`, which retries the answers meaning
"try again later" (HTTP 408, 429, 5xx) with backoff a bounded number of times and turns a Hub that cannot be
reached at all into one `HubUnreachable` line at once."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

import httpx2
from huggingface_hub import constants
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from pythia_sweep.errors import HubUnreachable, PythiaSweepError

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_STATUSES = (408, 429, 500, 502, 503, 504)  # the Hub's "try again later" answers (huggingface_hub's list)
HUB_ATTEMPTS = 5  # tries of one Hub operation before it is refused as HubUnreachable
BACKOFF_S = (1.0, 2.0, 4.0, 8.0)  # waits before tries 2..5, unless the server's Retry-After says otherwise
MAX_WAIT_S = 60.0  # the longest Retry-After honoured; longer ones are cut to this


def hub_call(what: str, call: Callable[[], T]) -> T:
    """Run one Hub operation, retrying the answers that mean "try again later".

    huggingface_hub 2.4 retries some requests itself (tree listings; a file's HEAD, on a second attempt; a
    download's 408/429), but not `list_repo_refs`, `model_info`/`repo_info` (the first request of every
    `snapshot_download`) nor a 5xx answer to a file's GET. Those reach here, often wrapped (DryRunError,
    LocalEntryNotFoundError), and the whole operation is tried again after the server's `Retry-After` or a
    doubling wait, HUB_ATTEMPTS tries in all; files already downloaded stay in the cache and are not
    downloaded again. A Hub that cannot be connected to is reported at once, in one line.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return call()
        except PythiaSweepError:
            raise
        except Exception as error:
            response = _transient_response(error)
            if response is None:
                cause = _connection_failure(error)
                if cause is None:
                    raise
                raise HubUnreachable(
                    f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} to {what} "
                    f"({type(cause).__name__}: {one_line(cause)}). Without Hub access run `make demo` "
                    "(offline demo family), or set HF_HUB_OFFLINE=1 to sweep what the local cache holds"
                ) from error
            status = response.status_code
            if attempt == HUB_ATTEMPTS:
                raise HubUnreachable(
                    f"the Hugging Face Hub at {constants.ENDPOINT} answered HTTP {status} to {what}, "
                    f"{HUB_ATTEMPTS} tries in a row ({response.request.method} {response.request.url}); try again later"
                ) from error
            retry_after = _retry_after(response)
            wait = min(BACKOFF_S[attempt - 1] if retry_after is None else retry_after, MAX_WAIT_S)
            log.warning("the Hub answered HTTP %d to %s; try %d of %d in %.0f s", status, what, attempt + 1,
                        HUB_ATTEMPTS, wait)  # fmt: skip
            time.sleep(wait)


def _causes(error: BaseException) -> Iterable[BaseException]:
    """The error and what it wraps (huggingface_hub often re-raises a network error inside another)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _transient_response(error: BaseException) -> httpx2.Response | None:
    for e in _causes(error):
        if isinstance(e, HfHubHTTPError) and e.response is not None and e.response.status_code in RETRY_STATUSES:
            return e.response
    return None


def _connection_failure(error: BaseException) -> BaseException | None:
    for e in _causes(error):
        if isinstance(e, (httpx2.TransportError, OfflineModeIsEnabled)):
            return e
    return None


def _retry_after(response: httpx2.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    return float(value) if value.isdigit() else None


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def is_connection_failure(error: BaseException) -> bool:
    """The Hub could not be connected to at all (no transient answer came back): what a dry run may meet offline."""
    return _transient_response(error) is None and _connection_failure(error) is not None
