"""Time-to-first-event (SSE) and round trips (WebSocket, raw TCP) direct vs through proxies.

Usage: measure.py ROUNDS NAME=HTTP_HOSTPORT[,TCP_HOSTPORT] ...   (prints one JSON object)
Targets are measured interleaved, round by round, so machine noise hits them alike.
"""
import asyncio, json, statistics, sys, time

import websockets

PING = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'


async def sse_first_event(hostport):
    host, port = hostport.rsplit(":", 1)
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET /mcp/sse HTTP/1.1\r\nHost: {hostport}\r\nAccept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    buf = b""
    while b"event: endpoint" not in buf or b"\n\n" not in buf.split(b"event: endpoint", 1)[1]:
        chunk = await reader.read(4096)
        if not chunk:
            raise RuntimeError("closed before the first event")
        buf += chunk
    dt = time.perf_counter() - t0
    writer.close()
    return dt


async def ws_rtts(hostport, n):
    out = []
    async with websockets.connect(f"ws://{hostport}/mcp/ws") as ws:
        for _ in range(n):
            t0 = time.perf_counter()
            await ws.send(PING.decode())
            await ws.recv()
            out.append(time.perf_counter() - t0)
    return out


async def tcp_rtts(hostport, n):
    host, port = hostport.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        writer.write(PING + b"\n")
        await writer.drain()
        await reader.readline()
        out.append(time.perf_counter() - t0)
    writer.close()
    return out


def summary(values):
    values = sorted(values)
    if not values:
        return None
    return {"n": len(values), "median_us": round(statistics.median(values) * 1e6, 1),
            "p99_us": round(values[min(len(values) - 1, int(len(values) * 0.99))] * 1e6, 1)}


async def main():
    rounds = int(sys.argv[1])
    targets = {}
    for arg in sys.argv[2:]:
        name, addrs = arg.split("=", 1)
        parts = addrs.split(",")
        targets[name] = (parts[0], parts[1] if len(parts) > 1 and parts[1] else None)
    res = {name: {"sse_ttfe": [], "ws_rtt": [], "tcp_rtt": []} for name in targets}
    names = list(targets)
    for r in range(rounds):
        # Rotated, so that no target always runs first (or right after another).
        for name in names[r % len(names):] + names[:r % len(names)]:
            http, tcp = targets[name]
            for _ in range(20):
                res[name]["sse_ttfe"].append(await sse_first_event(http))
            res[name]["ws_rtt"] += await ws_rtts(http, 200)
            if tcp:
                res[name]["tcp_rtt"] += await tcp_rtts(tcp, 200)
    print(json.dumps({name: {k: summary(v) for k, v in r.items()} for name, r in res.items()}))


asyncio.run(main())
