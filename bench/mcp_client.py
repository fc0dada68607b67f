"""Measures MCP tool calls with the official Python SDK: the same tool called directly on an
upstream MCP server and through Airlock's `/mcp`, one persistent session each; then how many
concurrent sessions Airlock holds.

Usage:
  mcp_client.py latency <upstream url> <airlock url> <agent key> <airlock tool> <upstream tool> <calls>
  mcp_client.py sessions <airlock url> <agent key> <count> <airlock pid>
Prints one JSON object.
"""
import asyncio
import json
import statistics
import sys
import time
from contextlib import AsyncExitStack

from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def timed_calls(url, headers, tool, arguments, calls):
    async with streamablehttp_client(url, headers=headers) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            for _ in range(min(20, calls)):
                await session.call_tool(tool, arguments)
            took = []
            for _ in range(calls):
                started = time.perf_counter()
                result = await session.call_tool(tool, arguments)
                took.append((time.perf_counter() - started) * 1000)
                if result.isError:
                    raise SystemExit(f"{tool} failed: {result.content}")
            return took


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def latency(upstream, airlock, key, airlock_tool, upstream_tool, calls):
    arguments = {"message": "hello"}
    direct = await timed_calls(upstream, {}, upstream_tool, arguments, calls)
    headers = {"Authorization": f"Bearer {key}", "x-airlock-intent": "Echo a greeting back"}
    through = await timed_calls(airlock, headers, airlock_tool, arguments, calls)
    report = {}
    for name, values in (("direct", direct), ("airlock", through)):
        report[name] = {"p50_ms": percentile(values, 50), "p99_ms": percentile(values, 99), "mean_ms": statistics.mean(values)}
    report["added_p50_ms"] = report["airlock"]["p50_ms"] - report["direct"]["p50_ms"]
    report["added_p99_ms"] = report["airlock"]["p99_ms"] - report["direct"]["p99_ms"]
    print(json.dumps(report))


async def sessions(airlock, key, count, pid):
    headers = {"Authorization": f"Bearer {key}", "x-airlock-intent": "Hold a session open"}
    before = rss_kib(pid)
    held = 0
    async with AsyncExitStack() as stack:
        samples = []
        for i in range(count):
            read, write, _ = await stack.enter_async_context(streamablehttp_client(airlock, headers=headers))
            session = await stack.enter_async_context(ClientSession(read, write))
            await session.initialize()
            held += 1
            if held % max(1, count // 10) == 0:
                samples.append({"sessions": held, "rss_kib": rss_kib(pid)})
        # Every session still answers.
        alive = 0
        for _ in range(1):
            listed = await session.list_tools()
            alive += len(listed.tools) > 0
        print(json.dumps({"sessions": held, "rss_before_kib": before, "rss_after_kib": rss_kib(pid), "samples": samples, "last_session_answers": bool(alive)}))


def main():
    mode = sys.argv[1]
    if mode == "latency":
        upstream, airlock, key, airlock_tool, upstream_tool, calls = sys.argv[2:8]
        asyncio.run(latency(upstream, airlock, key, airlock_tool, upstream_tool, int(calls)))
    else:
        airlock, key, count, pid = sys.argv[2:6]
        asyncio.run(sessions(airlock, key, int(count), int(pid)))


main()
