"""The MCP Python SDK's stdio client talking to `sitesteer stdio --url URL` (which keeps the
Streamable HTTP session and re-initializes when its site is lost), calling echo every 20ms.
Prints ready, then recovered at the first answer from another site, then done; a failed
call is printed as `failed`.

usage: session_failover.py SITESTEER_BIN URL
"""

import sys
import time
from datetime import timedelta

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from common import emit, fail

DEADLINE = time.monotonic() + 30


async def main(binary: str, url: str) -> None:
    params = StdioServerParameters(command=binary, args=["stdio", "--url", url])
    async with stdio_client(params) as (r, w):
        async with ClientSession(r, w, read_timeout_seconds=timedelta(seconds=5)) as session:
            await session.initialize()
            first = None
            calls = 0
            while time.monotonic() < DEADLINE:
                calls += 1
                try:
                    result = await session.call_tool("echo", {"text": f"call {calls}"})
                except Exception as e:  # noqa: BLE001 - counted by the Rust test
                    emit("failed", error=repr(e)[:200], call=calls)
                    continue
                site = (result.structuredContent or {}).get("site")
                if result.isError or not site:
                    emit("failed", error=str(result.content)[:200], call=calls)
                elif first is None:
                    first = site
                    emit("ready", site=site)
                elif site != first:
                    emit("recovered", site=site, calls=calls)
                    emit("done", calls=calls)
                    return
                await anyio.sleep(0.02)
    emit("gave_up")


try:
    anyio.run(main, sys.argv[1], sys.argv[2])
except Exception as e:  # noqa: BLE001 - reported to the Rust test
    fail(e)
