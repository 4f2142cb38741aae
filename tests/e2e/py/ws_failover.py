"""A `websockets` client that holds one connection, pinging every 50ms; when the connection
is lost it reconnects and pings again. Prints ready / lost / recovered.

usage: ws_failover.py URL
"""

import asyncio
import json
import sys
import time

from websockets.asyncio.client import connect

from common import emit, fail

DEADLINE = time.monotonic() + 30


async def echo(ws) -> str:
    req = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
           "params": {"name": "echo", "arguments": {"text": "ws"}}}
    await ws.send(json.dumps(req))
    reply = json.loads(await asyncio.wait_for(ws.recv(), 2))
    return reply["result"]["structuredContent"]["site"]


async def main(url: str) -> None:
    async with connect(url, open_timeout=5) as ws:
        emit("ready", site=await echo(ws), header=ws.response.headers.get("x-sitesteer-site"))
        try:
            while time.monotonic() < DEADLINE:
                await ws.send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "ping"}))
                assert json.loads(await asyncio.wait_for(ws.recv(), 2))["result"] == {}
                await asyncio.sleep(0.05)
        except Exception as e:  # noqa: BLE001 - the loss we wait for
            emit("lost", error=repr(e)[:200])
    for attempt in range(1, 200):
        if time.monotonic() > DEADLINE:
            break
        try:
            async with connect(url, open_timeout=2) as ws:
                site = await echo(ws)
                await ws.send(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "ping"}))
                ping = json.loads(await asyncio.wait_for(ws.recv(), 2))
                emit("recovered", site=site, ping=ping.get("result"), attempts=attempt,
                     header=ws.response.headers.get("x-sitesteer-site"))
                return
        except Exception as e:  # noqa: BLE001 - retried, bounded
            emit("retry", error=repr(e)[:200])
            await asyncio.sleep(0.02)
    emit("gave_up")


try:
    asyncio.run(main(sys.argv[1]))
except Exception as e:  # noqa: BLE001 - reported to the Rust test
    fail(e)
