#!/usr/bin/env bash
# The concurrency benchmark (issue 12): N researchers' sessions send a small grouped count
# to kura over HTTP on loopback for a bounded time each; prints p50/p99 per N and the ratio
# of p99 to the single-session p99 (goal: within 2x up to 50). Not part of CI.
#
#   tests/bench/load/run.sh [KURA] [PATIENTS]
#
# It prepares a demo data directory (`kura demo`, stopped once ready), then serves it with
# `kura serve` and a per-user limit above 50 (the demo has few researcher accounts, so the
# sessions share researcher1; each is its own login), runs tests/bench/load/load.py and
# stops the server. DURATION (seconds per N, default 20) and LEVELS ("1 5 10 25 50").
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
kura="$(realpath "${1:-target/release/kura}")"
patients="${2:-100000}"
work="$(mktemp -d /var/tmp/kura-load.XXXXXX)"
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
port=18480
password="load-bench-password-$(date +%s)"
"$kura" demo --data-dir "$work/demo" --port "$port" --flight-port $((port + 1)) --patients "$patients" \
  --demo-password "$password" > "$work/demo.log" 2>&1 &
server=$!
until grep -q "Ctrl-C" "$work/demo.log"; do sleep 1; kill -0 "$server"; done
kill "$server"; wait "$server" || true
d="$work/demo"
cat > "$work/serve.toml" <<TOML
listen = "127.0.0.1:$port"
data_dir = "$d"
audit_key_file = "$d/audit.key"
extract_key_file = "$d/extract.key"
log_format = "text"
query_per_user = 64
concurrency = 256
login_per_minute = 0
TOML
KURA_LOG=warn "$kura" serve --config "$work/serve.toml" > "$work/serve.log" 2>&1 &
server=$!
until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.5; kill -0 "$server"; done
python3 "$here/load.py" --base "http://127.0.0.1:$port" --password "$password" \
  --duration "${DURATION:-20}" --levels ${LEVELS:-1 5 10 25 50}
