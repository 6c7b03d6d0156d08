#!/usr/bin/env bash
# Create benchmarks/.peers/: a virtualenv holding mlwatch (editable) and its field peers, whylogs and
# Evidently, with every version pinned, so bench_profile.py can compare them in one process.
# The peers are not mlwatch dependencies and must never be installed into the system Python.
#
# Usage: bash benchmarks/setup_peers.sh [--force]     (--force rebuilds the venv from scratch)
# Then:  benchmarks/.peers/bin/python benchmarks/bench_profile.py
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
venv="$here/.peers"
python="${PYTHON:-python3}"

if [[ "${1:-}" == "--force" ]]; then
    rm -rf "$venv"
fi
if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet \
    -c "$here/constraints-peers.txt" \
    -r "$here/requirements-peers.txt" \
    -e "$root"
"$venv/bin/python" -m pip check
"$venv/bin/python" - <<'PY'
import importlib.metadata as md
for name in ("mlwatch", "whylogs", "evidently", "numpy", "pandas", "datasketches"):
    print(f"{name:>13} {md.version(name)}")
PY
echo "peers ready: $venv/bin/python benchmarks/bench_profile.py"
