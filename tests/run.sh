#!/usr/bin/env bash
# The one command that runs every check kura has: formatting, lints, all Rust tests, and the
# console's browser journeys. It installs what a fresh machine lacks first (Node/npm for the
# console build, Debian's chromium for the browser tests), so CI and a new developer run the
# same thing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v npm >/dev/null; then
  echo "== installing nodejs and npm (the console is built by build.rs)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
fi

echo "== rustfmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --all-targets --locked -- -D warnings
# clients and scale (issue 15): the Python clients (ADBC Flight SQL driver, pyarrow, pandas,
# nbformat) in a cached venv under the target directory, made before the tests use it.
echo "== python clients"
bash tests/clients/venv.sh >/dev/null
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast
else
  cargo test --locked --no-fail-fast
fi
echo "== browser journeys"
# The test build above also built the `kura` binary; reuse it rather than building again
# with the (different) non-test feature set.
export KURA_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/kura"
bash tests/e2e-browser.sh
