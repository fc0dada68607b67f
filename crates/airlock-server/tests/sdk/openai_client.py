"""The official `openai` SDK against Airlock's gateway, exactly as an application would use it.

Run by the Rust test `api::sdk`, which starts Airlock and a provider on loopback and passes
AIRLOCK_BASE_URL and AIRLOCK_KEY. Exits non-zero with a message on the first surprise.
"""

import json
import os
import sys

import openai

SECRET = "Email ana.lopez@example.com or call +44 20 7123 4567 about card 4111 1111 1111 1111."
TOOLS = [{"type": "function", "function": {"name": "note", "parameters": {"type": "object"}}}]

client = openai.OpenAI(base_url=os.environ["AIRLOCK_BASE_URL"] + "/v1", api_key=os.environ["AIRLOCK_KEY"], max_retries=0)


def check(condition, message):
    if not condition:
        sys.exit(f"openai SDK: {message}")


# A plain completion, with a tool call.
reply = client.chat.completions.create(model="fast", messages=[{"role": "user", "content": SECRET}], tools=TOOLS)
check(reply.choices[0].message.content == f"You said: {SECRET}", f"content: {reply.choices[0].message.content!r}")
arguments = json.loads(reply.choices[0].message.tool_calls[0].function.arguments)
check(arguments == {"note": SECRET}, f"tool arguments: {arguments!r}")
check(reply.usage.prompt_tokens > 0, "usage missing")

# Streamed, with the usage chunk asked for.
stream = client.chat.completions.create(
    model="fast", messages=[{"role": "user", "content": SECRET}], tools=TOOLS, stream=True,
    stream_options={"include_usage": True},
)
content, args, usage = "", "", None
for chunk in stream:
    if chunk.usage:
        usage = chunk.usage
    for choice in chunk.choices:
        content += choice.delta.content or ""
        for call in choice.delta.tool_calls or []:
            args += call.function.arguments or ""
check(content == f"You said: {SECRET}", f"streamed content: {content!r}")
check(json.loads(args) == {"note": SECRET}, f"streamed arguments: {args!r}")
check(usage is not None and usage.completion_tokens > 0, "streamed usage missing")

# JSON mode passes through.
reply = client.chat.completions.create(
    model="fast", messages=[{"role": "user", "content": "give json"}], response_format={"type": "json_object"}
)
check(reply.choices[0].message.content == "You said: give json", "json mode")

# Models: only what this key may use.
models = [m.id for m in client.models.list()]
check(models == ["fast"], f"models: {models!r}")

# Errors arrive as the SDK's own exception types, with Airlock's message.
try:
    client.chat.completions.create(model="not-allowed", messages=[{"role": "user", "content": "hi"}])
    sys.exit("openai SDK: a model outside the allowlist answered")
except openai.NotFoundError as e:
    check("not available to this key" in str(e), f"404 message: {e}")

try:
    client.chat.completions.create(model="fast", max_tokens=100000, messages=[{"role": "user", "content": "hi"}])
    sys.exit("openai SDK: a call over the per-call cap answered")
except openai.RateLimitError as e:
    check("per-call cap" in str(e), f"429 message: {e}")

try:
    openai.OpenAI(base_url=os.environ["AIRLOCK_BASE_URL"] + "/v1", api_key="alk_forged", max_retries=0).models.list()
    sys.exit("openai SDK: a forged key was accepted")
except openai.AuthenticationError:
    pass

print("openai SDK: ok")
