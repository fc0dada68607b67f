#!/usr/bin/env bash
# What Airlock adds to an MCP tool call, and how many MCP sessions it holds.
#
# Starts `airlock serve` (release build) on a scratch data directory and the npm reference
# server `server-everything` over streamable HTTP, imports its tools into Airlock, then, with
# the official Python MCP SDK, calls `echo` directly and through Airlock's `/mcp` (one
# persistent session each; p50/p99 of CALLS calls), and opens SESSIONS concurrent sessions to
# Airlock, sampling the server's resident memory. Needs `python3 -m pip install mcp` and the
# npm servers (`.ci/run` installs both); never part of CI.
#
#   CALLS=1000 SESSIONS=1000 bash bench/mcp.sh
set -euo pipefail
cd "$(dirname "$0")/.."
calls="${CALLS:-1000}"
sessions="${SESSIONS:-1000}"
servers="${AIRLOCK_TEST_MCP_SERVERS:-$HOME/.cache/airlock/mcp-servers/node_modules}"
bin="${CARGO_TARGET_DIR:-$HOME/.cache/airlock/target}/release/airlock"
cargo build --release -p airlock --quiet
data="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$data"' EXIT
airlock_port=18480
upstream_port=18481

"$bin" --data-dir "$data" serve --port "$airlock_port" > "$data/serve.log" 2>&1 &
airlock_pid=$!
PORT="$upstream_port" node "$servers/@modelcontextprotocol/server-everything/dist/index.js" streamableHttp > "$data/upstream.log" 2>&1 &
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$airlock_port/healthz" > /dev/null && break
  sleep 0.1
done
sleep 1

"$bin" --data-dir "$data" user create --tenant default --email ops@example.com --role admin --json > /dev/null
admin=$("$bin" --data-dir "$data" key create --tenant default --user ops@example.com --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
agent=$("$bin" --data-dir "$data" key create --tenant default --agent bench --create-agent --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
curl -sf -X POST "http://127.0.0.1:$airlock_port/v1/tool-servers/import" \
  -H "authorization: Bearer $admin" -H 'content-type: application/json' \
  -d "{\"server\": {\"kind\": \"streamable_http\", \"url\": \"http://127.0.0.1:$upstream_port/mcp\"}, \"prefix\": \"ev\", \"tools\": [\"echo\"]}" > /dev/null

echo "== latency: $calls calls of echo, directly and through Airlock"
python3 bench/mcp_client.py latency "http://127.0.0.1:$upstream_port/mcp" "http://127.0.0.1:$airlock_port/mcp" "$agent" ev.echo echo "$calls"
echo "== sessions: $sessions concurrent MCP sessions held by Airlock"
python3 bench/mcp_client.py sessions "http://127.0.0.1:$airlock_port/mcp" "$agent" "$sessions" "$airlock_pid"
