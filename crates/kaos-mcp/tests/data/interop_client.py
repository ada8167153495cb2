"""A client on the official Python MCP SDK (`mcp`, pinned by .ci/mcp-peers/requirements.txt)
for kaos-mcp's interop tests: it connects to kaos serving agents as MCP tools, lists the
tools, calls one with an explicit `_meta.traceparent` (the SDK injects one only from an
active OpenTelemetry span, and this venv has no OpenTelemetry SDK) and writes what it saw as
JSON to --report.

Transports:
  --url URL [--token T]     streamable HTTP (bearer token optional)
  --stdio-self              the MCP session runs over this process's own stdin/stdout (the
                            test process spawned us and serves on the other ends of the pipes)
  --command PROG ARG...     spawn PROG (e.g. `kaos mcp serve --agent a.toml`) and talk to it
                            over its stdin/stdout
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.stdio import stdio_server


def _dump(model: Any) -> Any:
    if model is None:
        return None
    if hasattr(model, "model_dump"):
        return model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return model


@asynccontextmanager
async def _transport(args: argparse.Namespace):
    if args.url:
        headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
        async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
            async with streamable_http_client(args.url, http_client=http) as streams:
                yield streams[0], streams[1]
    elif args.stdio_self:
        async with stdio_server() as (read, write):
            yield read, write
    else:
        params = StdioServerParameters(command=args.command[0], args=args.command[1:])
        async with stdio_client(params) as streams:
            yield streams[0], streams[1]


def _write_report(path: str, report: dict[str, Any]) -> None:
    # Atomically: with --stdio-self the test reads it while this process still runs.
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    os.replace(path + ".tmp", path)


def _leaves(e: BaseException) -> list[BaseException]:
    if isinstance(e, BaseExceptionGroup):
        return [leaf for sub in e.exceptions for leaf in _leaves(sub)]
    return [e]


async def _run(args: argparse.Namespace) -> None:
    report: dict[str, Any] = {}
    # With --stdio-self the transport only closes when the test closes our stdin, which it
    # does once the report is written: so the report is written inside the transport.
    async with _transport(args) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            report["protocol_version"] = str(init.protocol_version)
            report["server_info"] = _dump(init.server_info)
            listed = await session.list_tools()
            report["tools"] = [_dump(t) for t in listed.tools]
            arguments: dict[str, Any] = {"message": args.message}
            if args.session_id:
                arguments["session_id"] = args.session_id
            meta = {"traceparent": args.traceparent} if args.traceparent else None
            result = await session.call_tool(args.tool, arguments, meta=meta)
            report["call"] = _dump(result)
            report["text"] = "\n".join(
                c.text for c in result.content if getattr(c, "type", None) == "text"
            )
            # A bad call: no `message`. kaos answers with a JSON-RPC error.
            try:
                bad = await session.call_tool(args.tool, {})
                report["bad_call"] = {"result": _dump(bad)}
            except Exception as e:  # noqa: BLE001 - reported to the test, which asserts on it
                report["bad_call"] = {"error": f"{type(e).__name__}: {e}"}
        _write_report(args.report, report)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--url")
    p.add_argument("--token")
    p.add_argument("--stdio-self", action="store_true")
    p.add_argument("--tool", required=True)
    p.add_argument("--message", required=True)
    p.add_argument("--session-id")
    p.add_argument("--traceparent")
    p.add_argument("--report", required=True)
    p.add_argument("command", nargs="*")
    args = p.parse_args()
    try:
        anyio.run(_run, args)
    except BaseException as e:  # noqa: BLE001 - the failure goes to the report and stderr
        traceback.print_exc(file=sys.stderr)
        failure = "; ".join(f"{type(x).__name__}: {x}" for x in _leaves(e))
        _write_report(args.report, {"failure": failure})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
