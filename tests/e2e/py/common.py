"""Shared by the e2e client scripts: JSON-line output and an httpx factory that records
which site sitesteer says served each answer (`x-sitesteer-site`)."""

import json
import ssl
import sys
import time

import httpx

SITES_SEEN: list[str] = []
# Built once: a new httpx client otherwise loads the CA bundle again (~50ms of CPU), which
# would count against every reconnect the tests time.
_TLS = ssl.create_default_context()


def emit(event: str, **fields) -> None:
    """One JSON line on stdout for the Rust test; `at` is wall-clock seconds."""
    print(json.dumps({"event": event, "at": time.time(), **fields}), flush=True)


async def _record_site(response: httpx.Response) -> None:
    site = response.headers.get("x-sitesteer-site")
    if site:
        SITES_SEEN.append(site)


def client_factory(headers=None, timeout=None, auth=None) -> httpx.AsyncClient:
    """Like the SDK's default factory, plus a hook noting `x-sitesteer-site`."""
    return httpx.AsyncClient(
        headers=headers,
        timeout=timeout if timeout is not None else httpx.Timeout(30.0),
        auth=auth,
        follow_redirects=True,
        verify=_TLS,
        event_hooks={"response": [_record_site]},
    )


def fail(error: BaseException) -> None:
    emit("error", error=repr(error)[:500])
    sys.exit(1)
