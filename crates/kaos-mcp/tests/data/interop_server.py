"""A server on the official Python MCP SDK (`mcp` 2.x, whose `MCPServer` is v1's FastMCP),
for kaos-mcp's interop tests: kaos consumes its tools as an MCP client.

Tools: `shout` (read-only; upper-cases its text), `erase` (destructive), `fail` (raises `ToolError`,
which the SDK answers with an `isError` result). Each call appends one JSON line to the file named by
KAOS_MCP_INTEROP_LOG: the tool, its arguments and the `traceparent`/`tracestate` it received
in `params._meta`.

stdio by default; `--http` serves streamable HTTP on 127.0.0.1 at a free port and prints
`listening on 127.0.0.1:PORT` on stdout once it accepts connections.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

server = MCPServer("kaos-interop-python", version="1.0.0")


def _log(ctx: Context, tool: str, arguments: dict[str, Any]) -> None:
    path = os.environ.get("KAOS_MCP_INTEROP_LOG")
    if not path:
        return
    meta = ctx.request_context.meta or {}
    if hasattr(meta, "model_dump"):
        meta = meta.model_dump(by_alias=True, exclude_none=True)
    line = {
        "tool": tool,
        "arguments": arguments,
        "traceparent": meta.get("traceparent"),
        "tracestate": meta.get("tracestate"),
        "request_id": str(ctx.request_id),
    }
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def shout(text: str, ctx: Context) -> str:
    """Upper-cases its text."""
    _log(ctx, "shout", {"text": text})
    return text.upper()


@server.tool(annotations=ToolAnnotations(destructiveHint=True, readOnlyHint=False))
def erase(path: str, ctx: Context) -> str:
    """Erases a path (pretends to)."""
    _log(ctx, "erase", {"path": path})
    return f"erased {path}"


@server.tool()
def fail(reason: str, ctx: Context) -> str:
    """Always fails with the given reason."""
    _log(ctx, "fail", {"reason": reason})
    # ToolError: the SDK passes its message on (any other exception becomes a bare
    # "Error executing tool fail").
    raise ToolError(f"failed on purpose: {reason}")


async def _serve_http() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    host, port = sock.getsockname()
    app = server.streamable_http_app()
    config = uvicorn.Config(app, log_level="warning")
    userver = uvicorn.Server(config)
    print(f"listening on {host}:{port}", flush=True)
    await userver.serve(sockets=[sock])


def main() -> int:
    if "--http" in sys.argv[1:]:
        anyio.run(_serve_http)
    else:
        server.run("stdio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
