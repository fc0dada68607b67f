#!/usr/bin/env bash
# Airlock's model gateway next to LiteLLM's proxy: one fake OpenAI-compatible upstream
# (`airlock bench upstream`), the same request and the same open-loop load through each, in
# one run of `airlock bench gateway`. Airlock redacts and restores an e-mail, a phone number
# and a card number in every prompt; LiteLLM, as configured here, redacts nothing, so this
# compares proxy overhead, with Airlock doing more work.
#
# Heavy: it installs `litellm[proxy]` from PyPI into a virtualenv cached under
# ~/.cache/airlock (about 1 GB). It is a benchmark to run by hand, never part of CI.
#
#   bash bench/gateway-vs-litellm.sh                      # 1000 req/s, streamed too
#   RATES="50 200 500 1000" bash bench/gateway-vs-litellm.sh --seconds 10
#
# Environment: RATES (req/s, one run each; saturation is measured in the last run only),
# LITELLM_WORKERS (default: the number of CPUs, as LiteLLM advises for production),
# AIRLOCK_BIN (skip the release build), UPSTREAM_PORT (9100), LITELLM_PORT (4000),
# AIRLOCK_BENCH_CACHE (where the virtualenv lives). Other arguments go to `airlock bench
# gateway`.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${AIRLOCK_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/airlock}
venv=$cache/litellm-venv
rates=${RATES:-1000}
workers=${LITELLM_WORKERS:-$(nproc)}
upstream_port=${UPSTREAM_PORT:-9100}
litellm_port=${LITELLM_PORT:-4000}

if [[ -z "${AIRLOCK_BIN:-}" ]]; then
    target=${CARGO_TARGET_DIR:-$HOME/.cache/airlock/target}
    (cd "$root" && CARGO_TARGET_DIR="$target" cargo build --release -p airlock)
    AIRLOCK_BIN=$target/release/airlock
fi

if [[ ! -x "$venv/bin/litellm" ]]; then
    echo "installing litellm[proxy] into $venv" >&2
    mkdir -p "$cache"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet 'litellm[proxy]'
fi

work=$(mktemp -d)
pids=()
cleanup() {
    # Each server runs in its own session, so its process group holds its workers too.
    for pid in "${pids[@]}"; do
        kill -TERM -- "-$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() { # url, seconds, what
    for _ in $(seq "$2"); do
        if curl -sf -o /dev/null "$1"; then return 0; fi
        sleep 1
    done
    echo "$3 did not answer at $1 within $2 s" >&2
    return 1
}

setsid "$AIRLOCK_BIN" bench upstream --listen "127.0.0.1:$upstream_port" >"$work/upstream.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$upstream_port/v1/bench-stats" 30 "the fake upstream"

# A random master key: LiteLLM refuses to start without one, and Airlock's calls are
# authenticated too.
master_key="sk-bench-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
cat >"$work/litellm.yaml" <<EOF
model_list:
  - model_name: fast
    litellm_params:
      model: openai/gpt-test
      api_base: http://127.0.0.1:$upstream_port/v1
      api_key: x
litellm_settings:
  telemetry: false
  set_verbose: false
general_settings:
  disable_spend_logs: true
EOF
# No network here but the package registries: use the cost map shipped in the package rather
# than fetching it, and log errors only.
LITELLM_MASTER_KEY=$master_key LITELLM_LOG=ERROR LITELLM_LOCAL_MODEL_COST_MAP=True \
    setsid "$venv/bin/litellm" --config "$work/litellm.yaml" --host 127.0.0.1 --port "$litellm_port" \
    --num_workers "$workers" >"$work/litellm.log" 2>&1 &
pids+=($!)
litellm_pid=$!
if ! wait_for "http://127.0.0.1:$litellm_port/health/liveliness" 180 "LiteLLM"; then
    tail -n 30 "$work/litellm.log" >&2
    exit 1
fi

litellm_version=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))')
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "LiteLLM $litellm_version, $workers worker(s), no redaction configured; Airlock $("$AIRLOCK_BIN" --version)"
echo

last=${rates##* }
for rate in $rates; do
    saturation=()
    if [[ "$rate" != "$last" ]]; then saturation=(--saturation-seconds 0); fi
    "$AIRLOCK_BIN" bench gateway --rate "$rate" --stream \
        --upstream "http://127.0.0.1:$upstream_port/v1" \
        --compare "http://127.0.0.1:$litellm_port" --compare-key "$master_key" --compare-label LiteLLM \
        "${saturation[@]}" "$@"
    echo
done

# Peak resident memory of LiteLLM: the supervising process and each worker.
peak=0
for pid in $litellm_pid $(pgrep -P "$litellm_pid" || true); do
    kib=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    peak=$((peak + ${kib:-0}))
done
echo "LiteLLM peak RSS (sum over its $(( $(pgrep -c -P "$litellm_pid" || true) + 1 )) processes): $((peak / 1024)) MiB"
