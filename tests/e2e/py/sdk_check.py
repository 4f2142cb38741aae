"""The official MCP Python SDK as a client: for each `http|sse URL` pair, one session that
initializes, lists the tools and calls echo; one `done` line per session.

usage: sdk_check.py http URL [sse URL ...]
"""

import sys

import anyio
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamablehttp_client

from common import SITES_SEEN, client_factory, emit, fail


async def check(transport: str, url: str) -> None:
    SITES_SEEN.clear()
    if transport == "http":
        connect = streamablehttp_client(url, httpx_client_factory=client_factory)
    else:
        connect = sse_client(url, httpx_client_factory=client_factory)
    async with connect as streams:
        async with ClientSession(streams[0], streams[1]) as session:
            init = await session.initialize()
            tools = await session.list_tools()
            result = await session.call_tool("echo", {"text": "hello"})
    emit(
        "done",
        transport=transport,
        server=init.serverInfo.name,
        protocol=init.protocolVersion,
        tools=sorted(t.name for t in tools.tools),
        is_error=result.isError,
        text=(result.structuredContent or {}).get("text"),
        site=(result.structuredContent or {}).get("site"),
        headers=sorted(set(SITES_SEEN)),
    )


async def main(pairs: list[str]) -> None:
    for transport, url in zip(pairs[::2], pairs[1::2]):
        await check(transport, url)


try:
    anyio.run(main, sys.argv[1:])
except Exception as e:  # noqa: BLE001 - reported to the Rust test
    fail(e)
