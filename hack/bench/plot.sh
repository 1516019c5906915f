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
"$venv/bin/python" "$here/plot.py" "$@"
