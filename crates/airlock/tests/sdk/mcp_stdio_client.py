"""An MCP client over stdio, with the official Python SDK, talking to `airlock mcp-stdio`.

Usage: mcp_stdio_client.py <airlock binary> <mcp url> <intent> <tool> <arguments JSON>
The agent key comes in AIRLOCK_API_KEY. Prints one JSON object: the tools listed and the
result of calling <tool>.
"""
import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


async def main() -> None:
    binary, url, intent, tool, arguments = sys.argv[1:6]
    params = StdioServerParameters(
        command=binary,
        args=["mcp-stdio", "--url", url, "--intent", intent],
        env={"AIRLOCK_API_KEY": os.environ["AIRLOCK_API_KEY"], "PATH": os.environ.get("PATH", "")},
    )
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            listed = await session.list_tools()
            result = await session.call_tool(tool, json.loads(arguments))
            print(json.dumps({
                "tools": [t.name for t in listed.tools],
                "is_error": result.isError,
                "content": [c.model_dump() for c in result.content],
            }))


asyncio.run(main())
