# Sourced by scripts/demo and scripts/test: make .venv with movielab installed, idempotently.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${MOVIELAB_PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3.12 python3.13 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      PY="$cand"; break
    fi
  done
fi
if [ -z "$PY" ]; then echo "movielab needs Python 3.11 or newer on PATH" >&2; exit 2; fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
STAMP="$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ "$(cat .venv/.movielab-installed 2>/dev/null || true)" != "$STAMP" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
  echo "$STAMP" > .venv/.movielab-installed
fi
# The MovieLens ml-100k copy every run starts from (cached after the first fetch).
.venv/bin/python -m movielab data fetch >/dev/null
