"""A real MCP server from the official Python SDK (FastMCP), used as a sitesteer backend.

usage: server.py NAME PORT [streamable-http|sse|both]

`both` (the default) serves Streamable HTTP at /mcp and HTTP+SSE at /sse + /messages/ from
one process, so one process is one site.
"""

import sys

import uvicorn
from mcp.server.fastmcp import FastMCP

name, port = sys.argv[1], int(sys.argv[2])
transport = sys.argv[3] if len(sys.argv) > 3 else "both"

mcp = FastMCP(name, host="127.0.0.1", port=port, log_level="WARNING")


@mcp.tool(annotations={"readOnlyHint": True, "idempotentHint": True})
def echo(text: str) -> dict[str, str]:
    """Returns the text, tagged with the site that answered."""
    return {"text": text, "site": name}


if transport == "both":
    app = mcp.streamable_http_app()
    app.router.routes.extend(mcp.sse_app().routes)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
else:
    mcp.run(transport=transport)
