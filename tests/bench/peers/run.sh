#!/usr/bin/env bash
# The peer benchmark (issue 12): the same questions on the same ingested Parquet, answered by
# kura (suppression and DP, `kura bench query --json`), DuckDB (no privacy) and SmartNoise
# SQL (DP, ε = 1), in one run; prints times and ratios. Not part of CI.
#
#   tests/bench/peers/run.sh DATA [KURA]
#
# DATA: an ingested directory (`kura synth` + `kura ingest`); KURA: the kura binary
# (default target/release/kura). The Python peers live in a venv this script makes
# (PEERS_VENV, default /var/tmp/kura-peers-venv) from PyPI.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="${1:?usage: run.sh DATA [KURA]}"
kura="${2:-target/release/kura}"
venv="${PEERS_VENV:-/var/tmp/kura-peers-venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -c "import duckdb, snsql, pandas, pyarrow" 2>/dev/null ||
  "$venv/bin/pip" install -q -r "$here/requirements.txt"
exec "$venv/bin/python" "$here/peers.py" --data "$data" --kura "$kura" \
  --questions "$here/questions" --repeat "${REPEAT:-5}"
