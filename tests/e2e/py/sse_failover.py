"""The MCP Python SDK's `sse_client` holding an HTTP+SSE session, pinging every 50ms; when
the stream ends it opens a new one and calls echo. Prints ready / lost / recovered.

usage: sse_failover.py URL
"""

import sys
import time
from datetime import timedelta

import anyio
from mcp import ClientSession
from mcp.client.sse import sse_client

from common import client_factory, emit, fail

DEADLINE = time.monotonic() + 30


async def echo(session: ClientSession) -> str:
    result = await session.call_tool("echo", {"text": "sse"})
    return result.structuredContent["site"]


async def relay(source, sink, ended: anyio.Event) -> None:
    """Passes the stream's messages to the session and notes when the stream ends (the SDK
    only fails requests in flight at that moment)."""
    async with sink:
        async for message in source:
            await sink.send(message)
    ended.set()


async def hold(url: str) -> None:
    ended = anyio.Event()
    async with sse_client(url, timeout=2, httpx_client_factory=client_factory) as (r, w):
        sink, source = anyio.create_memory_object_stream(16)
        async with anyio.create_task_group() as tg:
            tg.start_soon(relay, r, sink, ended)
            async with ClientSession(source, w, read_timeout_seconds=timedelta(seconds=2)) as s:
                await s.initialize()
                emit("ready", site=await echo(s))
                while not ended.is_set() and time.monotonic() < DEADLINE:
                    await s.send_ping()
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
    emit("lost", error="stream ended")


async def once(url: str, attempt: int) -> None:
    async with sse_client(url, timeout=2, httpx_client_factory=client_factory) as (r, w):
        async with ClientSession(r, w, read_timeout_seconds=timedelta(seconds=2)) as s:
            await s.initialize()
            emit("recovered", site=await echo(s), attempts=attempt)


async def main(url: str) -> None:
    try:
        await hold(url)
    except Exception as e:  # noqa: BLE001 - the loss we wait for
        emit("lost", error=repr(e)[:200])
    for attempt in range(1, 200):
        if time.monotonic() > DEADLINE:
            break
        try:
            await once(url, attempt)
            return
        except Exception as e:  # noqa: BLE001 - retried, bounded
            emit("retry", error=repr(e)[:200])
            await anyio.sleep(0.02)
    emit("gave_up")


try:
    anyio.run(main, sys.argv[1])
except Exception as e:  # noqa: BLE001 - reported to the Rust test
    fail(e)
