"""The official MCP Python SDK against Airlock's `/mcp` endpoint, as an agent would use it.

Run by the Rust test `api::mcp`, which starts Airlock with tools on a recording upstream and
passes AIRLOCK_BASE_URL, AIRLOCK_KEY (the agent's), AIRLOCK_ADMIN_KEY and AIRLOCK_APPROVER_KEY.
The session is a run opened from the `x-airlock-intent` header. The script reads a tool,
has a payment held (the tenant's default: return at once), approves it over REST and sees it
executed, is refused a tool outside the lease, then switches the tenant to `wait` and makes a
payment the Rust side approves while the call is held. Exits non-zero on the first surprise.
"""

import asyncio
import inspect
import json
import os
import sys

import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.exceptions import McpError

BASE = os.environ["AIRLOCK_BASE_URL"]
KEY = os.environ["AIRLOCK_KEY"]
ADMIN = {"Authorization": "Bearer " + os.environ["AIRLOCK_ADMIN_KEY"]}
APPROVER = {"Authorization": "Bearer " + os.environ["AIRLOCK_APPROVER_KEY"]}
PAYMENT = {"to": "acct-42", "subject": "invoice 42", "count": 100}


def check(condition, message):
    if not condition:
        sys.exit(f"mcp SDK: {message}")


def airlock_meta(result):
    meta = result.meta or {}
    return meta.get("airlock", {})


async def call(session, name, arguments, key=None, progress=None):
    """`tools/call`, with an idempotency key in `_meta` where the SDK can send one."""
    kwargs = {}
    if progress is not None:
        kwargs["progress_callback"] = progress
    if key is not None and "meta" in inspect.signature(session.call_tool).parameters:
        kwargs["meta"] = {"idempotency_key": key}
    return await session.call_tool(name, arguments, **kwargs)


async def main():
    headers = {
        "Authorization": f"Bearer {KEY}",
        "x-airlock-intent": "look up the customer's ticket and pay invoice 42 to acct-42",
        "x-airlock-tools": "lookup,pay",
    }
    async with streamablehttp_client(BASE + "/mcp", headers=headers) as (read, write, _):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            check(init.capabilities.tools is not None, f"no tools capability: {init}")

            # Exactly the lease's tools, with their schemas.
            listed = (await session.list_tools()).tools
            names = sorted(tool.name for tool in listed)
            check(names == ["lookup", "pay"], f"tools: {names}")
            lookup = next(tool for tool in listed if tool.name == "lookup")
            check(lookup.inputSchema.get("required") == ["to"], f"schema: {lookup.inputSchema}")

            # A read tool runs; its output comes back as untrusted data.
            result = await call(session, "lookup", {"to": "ticket-7"})
            check(not result.isError, f"lookup failed: {result}")
            envelope = json.loads(result.content[0].text)
            check(envelope["type"] == "untrusted_data", f"envelope: {envelope}")
            check(envelope["source"] == "tool:lookup", f"source: {envelope}")
            check(envelope["content"] == {"ticket": 7, "status": "open"}, f"content: {envelope}")
            check(result.structuredContent == envelope, f"structured: {result.structuredContent}")
            meta = airlock_meta(result)
            check(meta.get("untrusted") is True and meta.get("status") == "succeeded", f"_meta: {result.meta}")

            # A payment is held; by default the call answers at once with the approval's id.
            result = await call(session, "pay", PAYMENT, key="pay-first")
            check(not result.isError, f"a held call is not an error: {result}")
            held = json.loads(result.content[0].text)
            check(held["status"] == "pending_approval", f"held: {held}")
            approval_id = held["approval_id"]
            check(isinstance(approval_id, str) and approval_id.startswith("apr_"), f"approval id: {held}")

            # A person approves it over REST; the action executes.
            async with httpx.AsyncClient(base_url=BASE) as rest:
                decided = await rest.post(
                    f"/v1/approvals/{approval_id}/decision",
                    headers=APPROVER,
                    json={"decision": "approve", "reason": "checked against the invoice"},
                )
                check(decided.status_code == 200, f"approval: {decided.status_code} {decided.text}")
                action = (await rest.get(f"/v1/actions/{held['action_id']}", headers=ADMIN)).json()
                check(action["status"] == "succeeded", f"approved action: {action}")

                # The same key again answers with the outcome, without executing twice.
                if "meta" in inspect.signature(session.call_tool).parameters:
                    again = await call(session, "pay", PAYMENT, key="pay-first")
                    check(airlock_meta(again).get("status") == "succeeded", f"replay: {again}")

                # Outside the lease, a tool does not exist.
                try:
                    await call(session, "wire_transfer", {"to": "acct-1"})
                    sys.exit("mcp SDK: a tool outside the lease was called")
                except McpError as error:
                    check("unknown tool" in str(error), f"outside the lease: {error}")

                # The tenant switches to `wait`: the call is held until the Rust side approves.
                settings = {"mcp": {"approvals": "wait", "wait_secs": 30}}
                put = await rest.put("/v1/flow-settings", headers=ADMIN, json=settings)
                check(put.status_code == 200, f"flow settings: {put.status_code} {put.text}")

            progress = []

            async def on_progress(value, total, message):
                progress.append((value, total, message))

            second = dict(PAYMENT, subject="invoice 43")
            result = await call(session, "pay", second, key="pay-second", progress=on_progress)
            check(not result.isError, f"waited payment: {result}")
            meta = airlock_meta(result)
            check(meta.get("status") == "succeeded", f"waited payment: {result}")
            check(json.loads(result.content[0].text)["type"] == "untrusted_data", f"waited payment: {result}")
            check(progress, "no progress notification while waiting")

    print("mcp SDK: ok")


asyncio.run(main())
