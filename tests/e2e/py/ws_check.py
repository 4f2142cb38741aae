"""A WebSocket client from PyPI (`websockets`), once: JSON-RPC ping and tools/call echo.

usage: ws_check.py URL
"""

import asyncio
import json
import sys

from websockets.asyncio.client import connect

from common import emit, fail


async def call(ws, id_: int, method: str, params: dict) -> dict:
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": id_, "method": method, "params": params}))
    return json.loads(await asyncio.wait_for(ws.recv(), 5))


async def main(url: str) -> None:
    async with connect(url, open_timeout=5) as ws:
        ping = await call(ws, 1, "ping", {})
        echo = await call(ws, 2, "tools/call", {"name": "echo", "arguments": {"text": "hi"}})
        emit(
            "done",
            header=ws.response.headers.get("x-sitesteer-site"),
            ping=ping,
            echo=echo,
        )


try:
    asyncio.run(main(sys.argv[1]))
except Exception as e:  # noqa: BLE001 - reported to the Rust test
    fail(e)
