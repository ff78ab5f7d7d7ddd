#!/usr/bin/env bash
# The official OpenAI Python SDK through OUR client in a REFERENCE COCOON network:
#   SDK → cocoon client (fake_ton) → reference router → reference proxy-runner
#       → reference router → reference worker-runner → SmolLM2 on `cocoon engine serve`.
# Usage: scripts/interop_sdk.sh COCOON_BINARY PYTHONPATH_WITH_OPENAI
# Needs ../shared/reference (the reference runners); fails saying so when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
cocoon="$1"
py="$2"
ref="${COCOON_REFERENCE_DIR:-$PWD/../shared/reference}"
[ -x "$ref/run-local" ] || { echo "interop: the reference COCOON runners are missing at $ref (set COCOON_REFERENCE_DIR)" >&2; exit 1; }
model=SmolLM2-135M-Instruct-Q4_1
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    bash "$ref/run-local" --stop --dir "$work/ref" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "interop: $*" >&2; tail -n 40 "$work"/*.log "$work"/ref/logs/*.log 2>/dev/null >&2 || true; exit 1; }

engine_port=$(free_port)
"$cocoon" engine serve --model smollm2 --listen "127.0.0.1:$engine_port" >"$work/engine.log" 2>&1 &
pids+=($!)
bash "$ref/run-local" --dir "$work/ref" --roles proxy,router,worker --auto-ports \
    --backend "127.0.0.1:$engine_port" --model "$model" --router-cert fake_tdx \
    --worker-coefficient 1000 -v 1 >"$work/run-local.log" 2>&1 || fail "the reference network did not start"
root=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["root_contract_address"])' "$work/ref/conf/proxy-config.json")

"$cocoon" wallet new --out "$work/client-wallet.json" >/dev/null
api_port=$(free_port)
cat >"$work/client.toml" <<TOML
fake_ton = "$work/ref/conf/fake-ton-config.json"
root = "$root"
wallet = "$work/client-wallet.json"
dir = "$work/client"
policy = "fake_tdx"
listen = "127.0.0.1:$api_port"
api_key = "interop-key"
TOML
"$cocoon" client --config "$work/client.toml" >"$work/client.log" 2>&1 &
pids+=($!)

# The reference worker joins its proxy on its own schedule (it redials every ~10 s).
for _ in $(seq 1 180); do
    if curl -sf -m 5 -H "Authorization: Bearer interop-key" "http://127.0.0.1:$api_port/v1/models" 2>/dev/null | grep -q "$model"; then
        break
    fi
    sleep 0.5
done
curl -sf -m 5 -H "Authorization: Bearer interop-key" "http://127.0.0.1:$api_port/v1/models" | grep -q "$model" \
    || fail "our client never listed $model through the reference proxy"
printf '{"base_url": "http://127.0.0.1:%s/v1", "api_key": "interop-key"}\n' "$api_port" >"$work/network.json"
PYTHONPATH="$py" python3 scripts/openai_check.py "$work/network.json" "$model" || fail "the OpenAI SDK check failed"
echo "interop: the OpenAI SDK through our client, a reference proxy and a reference worker: passed"
