#!/usr/bin/env bash
# Create (or bring up to date) .venv with exactly the versions in
# requirements.lock, then install attndsl itself in editable mode.
#
# The lock is complete (every direct and transitive dependency, pip and
# setuptools included), so it is installed with --no-deps: nothing is
# resolved against the registry of the day.  Packages in .venv that the lock
# does not name are removed, so `pip freeze` equals the lock afterwards
# (tests/test_lock.py checks it).  Regenerate the lock with scripts/lock.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
LOCK=requirements.lock
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
# pip first (the lock's pip reads the lock), then everything else without resolution.
python -m pip install -q --disable-pip-version-check "$(grep -i '^pip==' "$LOCK")"
pip install -q --no-deps -r "$LOCK"
# attndsl itself, built with the locked setuptools (no isolated build env to resolve).
pip install -q --no-deps --no-build-isolation -e .
# Remove what the lock does not name (left over from an older lock).
extra=$(python scripts/lock_check.py --extras)
if [ -n "$extra" ]; then
    pip uninstall -q -y $extra
fi
python scripts/lock_check.py
