#!/usr/bin/env bash
# Runs the demo service for a few seconds on ephemeral ports, probes it over HTTP while it runs,
# and checks that it logged JSON, listened, and shut down cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo build -q -p hello-service
HELLO_SERVER__HTTP=127.0.0.1:0 HELLO_SERVER__GRPC=127.0.0.1:0 \
  ./target/debug/hello-service --for 3s >"$out" 2>&1 &
pid=$!
addr=""
for _ in $(seq 1 50); do
  addr=$(grep -o 'listening: http://[0-9.:]*' "$out" | head -n1 | sed 's#listening: http://##') || true
  [[ -n "$addr" ]] && break
  sleep 0.1
done
[[ -n "$addr" ]] || { cat "$out"; echo "demo: no listening line"; exit 1; }
code=$(timeout 5 bash -c "exec 3<>/dev/tcp/${addr%:*}/${addr##*:}; printf 'GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3; head -n1 <&3")
wait "$pid" || { cat "$out"; echo "demo: exited non-zero"; exit 1; }
cat "$out"
[[ "$code" == *" 200 "* ]] || { echo "demo: /readyz answered '$code'"; exit 1; }
grep -q '"message":"shutdown complete"' "$out" || { echo "demo: no clean shutdown logged"; exit 1; }
if command -v python3 >/dev/null 2>&1; then
  grep '^{' "$out" | python3 -c 'import json,sys; [json.loads(l) for l in sys.stdin]' \
    || { echo "demo: a log line is not JSON"; exit 1; }
fi
echo "demo: ok (/readyz 200, JSON logs, clean shutdown)"
