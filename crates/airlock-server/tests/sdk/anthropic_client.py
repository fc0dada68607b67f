"""The official `anthropic` SDK against Airlock's gateway, exactly as an application would use it.

Run by the Rust test `api::sdk`, which starts Airlock and a provider on loopback and passes
AIRLOCK_BASE_URL and AIRLOCK_KEY. Exits non-zero with a message on the first surprise.
"""

import os
import sys

import anthropic

SECRET = "Email ana.lopez@example.com or call +44 20 7123 4567 about card 4111 1111 1111 1111."
TOOLS = [{"name": "note", "description": "Take a note", "input_schema": {"type": "object"}}]

client = anthropic.Anthropic(base_url=os.environ["AIRLOCK_BASE_URL"], api_key=os.environ["AIRLOCK_KEY"], max_retries=0)


def check(condition, message):
    if not condition:
        sys.exit(f"anthropic SDK: {message}")


reply = client.messages.create(
    model="claude", max_tokens=256, system="Be brief.", tools=TOOLS,
    messages=[{"role": "user", "content": SECRET}],
)
check(reply.content[0].text == f"You said: {SECRET}", f"text: {reply.content[0].text!r}")
check(reply.content[1].input == {"note": SECRET}, f"tool input: {reply.content[1].input!r}")
check(reply.usage.input_tokens > 0, "usage missing")

with client.messages.stream(
    model="claude", max_tokens=256, tools=TOOLS, messages=[{"role": "user", "content": SECRET}]
) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
check(text == f"You said: {SECRET}", f"streamed text: {text!r}")
check(final.content[1].input == {"note": SECRET}, f"streamed tool input: {final.content[1].input!r}")
check(final.usage.output_tokens > 0, "streamed usage missing")

# A tool result goes back through redaction too.
reply = client.messages.create(
    model="claude", max_tokens=64,
    messages=[
        {"role": "user", "content": "Check my card."},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_9", "name": "note", "input": {"card": "4111 1111 1111 1111"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "Card 4111 1111 1111 1111 is valid."}]},
    ],
)
check(reply.content[0].text.startswith("You said:"), "tool result round")

try:
    client.messages.create(model="not-allowed", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    sys.exit("anthropic SDK: a model outside the allowlist answered")
except anthropic.NotFoundError as e:
    check("not available to this key" in str(e), f"404 message: {e}")

try:
    anthropic.Anthropic(base_url=os.environ["AIRLOCK_BASE_URL"], api_key="alk_forged", max_retries=0).messages.create(
        model="claude", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
    )
    sys.exit("anthropic SDK: a forged key was accepted")
except anthropic.AuthenticationError:
    pass

print("anthropic SDK: ok")
