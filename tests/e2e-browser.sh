#!/usr/bin/env bash
# Browser journeys of the web console (issue 5) against the real `kura demo` on loopback.
# Installs what a fresh machine lacks (Debian's chromium, the console's npm packages), builds
# the debug binary (which also builds the console), then runs src/console/web/e2e/run.mjs.
# Screenshots: target/e2e/*.png (kept as test artefacts).
#
# Usage: bash tests/e2e-browser.sh        (env: E2E_PATIENTS, KURA_BIN, CHROMIUM, E2E_OUT)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
web=src/console/web

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v npm >/dev/null; then
  echo "npm missing: installing nodejs and npm (apt) / npm がないためインストールします" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
fi
if [ -z "${CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then
  echo "chromium missing: installing Debian's chromium (never a downloaded browser) / chromium をインストールします" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
# Japanese glyphs in screenshots (the console itself needs no font from outside), and the
# font kura's PDF reports are set in (issue 13: the journeys download PDFs).
if [ ! -f /usr/share/fonts/opentype/ipafont-gothic/ipag.ttf ]; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-ipafont-gothic
fi

if [ ! -f "$web/node_modules/.package-lock.json" ] || [ "$web/package-lock.json" -nt "$web/node_modules/.package-lock.json" ]; then
  (cd "$web" && npm install --no-audit --no-fund)
fi

target=${CARGO_TARGET_DIR:-$root/target}
if [ -z "${KURA_BIN:-}" ]; then
  cargo build --bin kura
  export KURA_BIN="$target/debug/kura"
fi
export E2E_OUT=${E2E_OUT:-$root/target/e2e}
mkdir -p "$E2E_OUT"

cd "$web"
node --test --test-concurrency=1 --test-reporter=spec e2e/*.mjs
echo "screenshots: $E2E_OUT"
