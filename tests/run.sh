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

# production (issue 14): the store and API suites also run on PostgreSQL, on a throwaway
# cluster started here and stopped on exit.
source tests/pg-cluster.sh
pg_cluster_start
# The deploy check reads compose.yaml with PyYAML.
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q pyyaml
trap pg_cluster_stop EXIT
if [ "${CI:-}" = true ] && [ -z "${KURA_TEST_PG_URL:-}" ]; then
  echo "CI=true but no PostgreSQL test cluster (KURA_TEST_PG_URL): refusing to test SQLite alone" >&2
  exit 1
fi

# annual and usage reports (issue 13): PDF reports need a Japanese font (Debian's IPA Gothic,
# IPA Font Licence) and the tests read the PDFs back with poppler's pdftotext. The output
# airlock (issue 13 §1) draws release charts (result-N.png) with the same font; its tests check
# that the chart is there.
if [ ! -f /usr/share/fonts/opentype/ipafont-gothic/ipag.ttf ] || ! command -v pdftotext >/dev/null; then
  echo "== installing fonts-ipafont-gothic and poppler-utils (PDF reports)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-ipafont-gothic poppler-utils
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
# production (issue 14): the same store and API tests again, each on its own PostgreSQL
# database (src/store/testing.rs).
echo "== tests on PostgreSQL (store and API suites)"
pg_filter='test(/^store::/) | test(/^policy::/) | test(/^api::/) | test(/^dp_api::/) | test(/^alerts::/) | test(/^usage_report::/) | test(/^production::store/)'
# clients and scale (issue 15): Flight SQL and .ipynb export/import also run on PostgreSQL.
pg_filter="$pg_filter | test(/^flight::/) | test(/^ipynb::/)"
# seeds (issue 16): facility accounts, notices, the register, the place of use
pg_filter="$pg_filter | test(/^seeds_(register|facility|place)::/)"
# console (issue 17): the operator's screens (users, extracts) and notebooks
pg_filter="$pg_filter | test(/^admin_api::/) | test(/^ledger_users::/)"
# the output airlock (issue 13 §1): release requests, decisions, files, downloads
pg_filter="$pg_filter | test(/^airlock::/)"
if cargo nextest --version >/dev/null 2>&1; then
  KURA_TEST_STORE=postgres cargo nextest run --locked --no-fail-fast -E "$pg_filter"
else
  KURA_TEST_STORE=postgres cargo test --locked --no-fail-fast -- store:: policy:: api:: dp_api:: alerts:: usage_report:: production::store seeds_register:: seeds_facility:: seeds_place:: admin_api:: ledger_users:: airlock:: flight:: ipynb::
fi
echo "== browser journeys"
# The test build above also built the `kura` binary; reuse it rather than building again
# with the (different) non-test feature set.
export KURA_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/kura"
bash tests/e2e-browser.sh
