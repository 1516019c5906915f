#!/usr/bin/env bash
# Draws the `make bench` plot with matplotlib from a virtualenv cached under the project cache.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${DOO_CACHE_DIR:-$HOME/.cache/databricks-oauth-operator}"
pin="$(tr -d '\n' < "$here/requirements.txt" | tr '=' '-')"
venv="$cache/python/$pin"
if [[ ! -f "$venv/.complete" ]]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$venv/.complete"
fi
# A run with no sizes (BENCH_SIZES= for the other runs alone) has no timeline to draw.
if ! python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))["runs"] else 1)' "$1"; then
  echo "no scale runs in $1: no plot"
  exit 0
fi
"$venv/bin/python" "$here/plot.py" "$@"
