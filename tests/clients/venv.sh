#!/usr/bin/env bash
# The Python venv of the real-client tests (ADBC Flight SQL driver, pyarrow, pandas, nbformat):
# made once under the cargo target directory, reused while requirements.txt is unchanged.
# Prints the venv's python. Safe to run from several tests at once (flock).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${KURA_PY_VENV:-${CARGO_TARGET_DIR:-$root/target}/py-clients}
req=$here/requirements.txt
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [ -x "$venv/bin/python" ] && cmp -s "$req" "$venv/.requirements"; then
  echo "$venv/bin/python"
  exit 0
fi
echo "== making the Python client venv at $venv" >&2
rm -rf "$venv"
python3 -m venv "$venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req" >&2
cp "$req" "$venv/.requirements"
echo "$venv/bin/python"
